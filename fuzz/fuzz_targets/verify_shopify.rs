//! The `shopify` verifier: any request gets an answer, and one signed as the provider signs is
//! accepted (see hookbus_fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hookbus_fuzz::verify_both(hookbus_signature::Scheme::Shopify, data);
});
