//! Generates the Rust types from `proto/` with protox (pure Rust, no `protoc`), prost-build and
//! pbjson-build (proto3 JSON mapping).

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "hookbus/v1/event.proto",
    "hookbus/commerce/v1/commerce.proto",
    "hookbus/inventory/v1/inventory.proto",
    "hookbus/egress/v1/egress.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let fds = protox::compile(FILES, [&root])?;
    let descriptor_path = out.join("hookbus_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .bytes(["."])
        .compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".hookbus"])?;
    Ok(())
}
