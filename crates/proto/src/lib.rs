//! Protobuf types of hookbus, generated from `proto/` at build time, with their proto3 JSON mapping
//! (pbjson) and a registry that turns a typed payload into JSON by its message name.

#![forbid(unsafe_code)]

mod registry;
mod schema;

pub use registry::{Named, Registry, RegistryError, content_type_for, proto_name_of};
pub use schema::json_schema;

/// The encoded `FileDescriptorSet` of every hookbus message.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hookbus_descriptor.bin"));

/// The envelope (`hookbus.v1`).
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/hookbus.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/hookbus.v1.serde.rs"));
}

/// Typed commerce events (`hookbus.commerce.v1`).
pub mod commerce {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/hookbus.commerce.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/hookbus.commerce.v1.serde.rs"));
    }
}

/// Typed inventory events (`hookbus.inventory.v1`).
pub mod inventory {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/hookbus.inventory.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/hookbus.inventory.v1.serde.rs"));
    }
}

/// Egress records (`hookbus.egress.v1`).
pub mod egress {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/hookbus.egress.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/hookbus.egress.v1.serde.rs"));
    }
}

pub use pbjson_types::Timestamp;
