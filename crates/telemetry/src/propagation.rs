//! W3C trace context (`traceparent`, `tracestate`) across NATS and HTTP headers.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes trace context into NATS message headers.
pub struct NatsInjector<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads trace context from NATS message headers.
pub struct NatsExtractor<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Reads trace context from HTTP request headers.
pub struct HttpExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace context a NATS message carries.
pub fn context_from_nats(headers: &async_nats::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&NatsExtractor(headers))
}

/// The trace context an HTTP request carries.
pub fn context_from_http(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HttpExtractor(headers))
}

/// Makes `span` a child of the trace in an HTTP request's headers, when there is one.
pub fn set_parent_from_http(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        let _ = span.set_parent(context_from_http(headers));
    }
}

/// Makes `span` a child of the trace in a NATS message's headers, when there is one.
pub fn set_parent_from_nats(span: &tracing::Span, headers: &async_nats::HeaderMap) {
    if headers.get("traceparent").is_some() {
        let _ = span.set_parent(context_from_nats(headers));
    }
}

/// Writes the current span's trace context into NATS headers.
pub fn inject_current_into_nats(headers: &mut async_nats::HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut NatsInjector(headers));
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn known_traceparent_round_trips_through_nats_headers() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", TRACEPARENT);
        headers.insert("tracestate", "congo=t61rcWkgMzE");
        let cx = context_from_nats(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());

        let mut out = async_nats::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut NatsInjector(&mut out));
        assert_eq!(out.get("traceparent").unwrap().as_str(), TRACEPARENT);
        assert_eq!(out.get("tracestate").unwrap().as_str(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn known_traceparent_is_read_from_http_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", TRACEPARENT.parse().unwrap());
        let cx = context_from_http(&headers);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn a_malformed_traceparent_gives_no_context() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", "00-zz-00f067aa0ba902b7-01");
        assert!(!context_from_nats(&headers).span().span_context().is_valid());
    }
}
