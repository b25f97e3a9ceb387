//! Compiles `proto/` with protox (pure Rust, no `protoc` to install).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/leadscore/v1/event.proto",
        "proto/leadscore/v1/status_change.proto",
        "proto/leadscore/v1/score.proto",
        "proto/leadscore/internal/v1/routed.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // Small maps: a BTreeMap is cheaper to build than a HashMap (no hasher
    // state per message) and comes out sorted, as the engine wants it.
    prost_build::Config::new()
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
