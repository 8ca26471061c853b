//! The configuration parser: any TOML text (and the environment it may set) loads, or is refused
//! with an error naming a key; the ingress's sources, with their verifiers, are built from what
//! loads.
#![no_main]

use hookbus_config::{Loader, ServiceConfig};
use hookbus_ingress::IngressConfig;

libfuzzer_sys::fuzz_target!(|text: &str| {
    let Ok(loader) = Loader::from_toml(text, Vec::<(String, String)>::new()) else {
        return;
    };
    if let Ok(config) = ServiceConfig::<IngressConfig>::load(&loader) {
        let _ = config.service.sources();
    }
});
