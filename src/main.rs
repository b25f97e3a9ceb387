//! The `leadscore` binary: a thin shell around the library's command line.

/// mimalloc rather than glibc's allocator: the fold allocates and frees
/// millions of small blocks (lead state, changes), where glibc spends a
/// fifth of `leadscore score`'s time consolidating its free lists.
///
/// Built with `no_thp`: mimalloc would otherwise ask for transparent huge
/// pages on its whole arena, and where the kernel compacts memory to find
/// them (`defrag = madvise`, a common default), a growing state spent 0.1 to
/// 0.8 s in the kernel per `score` of a million leads, for no gain in user time.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    leadscore::cli::main()
}
