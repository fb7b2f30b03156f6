//! Records which Cargo profile built the binary, so that the demo and the
//! benchmarks can say what their figures were measured with: an
//! unoptimised debug build is ten to thirty times slower on this pipeline.
//! Cargo tells build scripts only "debug" or "release"; the profile's own
//! name (`fast-release`, …) is the directory it builds into.

fn main() {
    let profile = std::env::var("OUT_DIR")
        .ok()
        .and_then(|out| {
            // …/target/<profile>/build/gatehouse-<hash>/out
            std::path::Path::new(&out)
                .ancestors()
                .nth(3)
                .and_then(|dir| dir.file_name())
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=GATEHOUSE_BUILD_PROFILE={profile}");
    println!("cargo:rerun-if-changed=build.rs");
}
