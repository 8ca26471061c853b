//! The generic `hmac` verifier (hex HMAC-SHA256 of `{timestamp}.{body}`): any request gets an
//! answer, and one signed as the scheme says is accepted (see hookbus_fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hookbus_fuzz::verify_both(hookbus_fuzz::hmac_scheme(), data);
});
