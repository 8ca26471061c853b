//! The `hmac` scheme's payload template (`{timestamp}.{body}`): any text parses or is refused
//! with an error; what parses includes `{body}` and says the same of its placeholders as the text.
#![no_main]

use hookbus_signature::PayloadTemplate;

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(template) = PayloadTemplate::parse(text) {
        assert!(text.contains("{body}"));
        assert_eq!(template.uses_timestamp(), text.contains("{timestamp}"));
        assert_eq!(template.uses_id(), text.contains("{id}"));
    }
});
