//! The `leadscore` binary: a thin shell around the library's command line.

/// mimalloc rather than glibc's allocator: the fold allocates and frees
/// millions of small blocks (lead state, changes), where glibc spends a
/// fifth of `leadscore score`'s time consolidating its free lists.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    leadscore::cli::main()
}
