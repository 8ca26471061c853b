//! W3C trace context (`traceparent`, `tracestate`) across NATS and HTTP headers.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
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

/// Writes trace context into HTTP request headers.
pub struct HttpInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HttpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
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

/// Makes `span` a child of `parent` when it holds a valid span context and spans are exported.
/// Call it before the span is first entered.
pub fn set_span_parent(span: &tracing::Span, parent: &Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent.clone());
    }
}

/// Makes `span` a child of the trace in a NATS message's headers, when there is one.
pub fn set_parent_from_nats(span: &tracing::Span, headers: &async_nats::HeaderMap) {
    if !span.is_disabled() && headers.get("traceparent").is_some() {
        let _ = span.set_parent(context_from_nats(headers));
    }
}

/// Links `span` to the trace in a NATS message's headers, when there is one: how a span that
/// handles a batch points at every message's producer beyond the one it is a child of.
pub fn link_from_nats(span: &tracing::Span, headers: &async_nats::HeaderMap) {
    if span.is_disabled() || headers.get("traceparent").is_none() {
        return;
    }
    let context = context_from_nats(headers);
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// The trace context to send onwards from the current span.
///
/// With spans exported, that is the current span's own context. Without, there is no span to
/// point at, so this is a new span id under `parent`'s trace (a new trace when `parent` has none),
/// keeping its sampled flag: every event still carries a `traceparent` that joins the caller's
/// trace, at the cost of two random numbers.
pub fn outgoing_context(parent: &Context) -> Context {
    let current = tracing::Span::current().context();
    if current.span().span_context().is_valid() {
        return current;
    }
    let ids = RandomIdGenerator::default();
    let parent_span = parent.span();
    let parent_context = parent_span.span_context();
    let (trace_id, flags, state) = if parent_context.is_valid() {
        (
            parent_context.trace_id(),
            parent_context.trace_flags(),
            parent_context.trace_state().clone(),
        )
    } else {
        // A trace starts here: sampled, so that services exporting spans further on record it
        // (their default sampler follows the parent's flag).
        (
            ids.new_trace_id(),
            TraceFlags::SAMPLED,
            TraceState::default(),
        )
    };
    let span_context = SpanContext::new(trace_id, ids.new_span_id(), flags, false, state);
    Context::new().with_remote_span_context(span_context)
}

/// Writes `cx` as `traceparent`/`tracestate` into NATS headers.
pub fn inject_into_nats(headers: &mut async_nats::HeaderMap, cx: &Context) {
    TraceContextPropagator::new().inject_context(cx, &mut NatsInjector(headers));
}

/// Writes `cx` as `traceparent`/`tracestate` into HTTP headers.
pub fn inject_into_http(headers: &mut http::HeaderMap, cx: &Context) {
    TraceContextPropagator::new().inject_context(cx, &mut HttpInjector(headers));
}

/// Only the trace context (`traceparent`, `tracestate`) of NATS headers, to pass it on.
pub fn trace_headers_of(headers: Option<&async_nats::HeaderMap>) -> async_nats::HeaderMap {
    let mut kept = async_nats::HeaderMap::new();
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = headers.and_then(|h| h.get(name)) {
            kept.insert(name, value.as_str());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
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
    fn without_exported_spans_the_outgoing_context_continues_the_parents_trace() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", TRACEPARENT);
        let parent = context_from_nats(&headers);
        let child = outgoing_context(&parent);
        let mut out = async_nats::HeaderMap::new();
        inject_into_nats(&mut out, &child);
        let traceparent = out.get("traceparent").unwrap().as_str().to_owned();
        assert!(
            traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{traceparent}"
        );
        assert!(traceparent.ends_with("-01"), "{traceparent}");
        assert!(
            !traceparent.contains("00f067aa0ba902b7"),
            "a new span id: {traceparent}"
        );

        let fresh = outgoing_context(&Context::new());
        let mut out = async_nats::HeaderMap::new();
        inject_into_nats(&mut out, &fresh);
        let traceparent = out.get("traceparent").unwrap().as_str().to_owned();
        assert_eq!(traceparent.len(), 55, "{traceparent}");
        assert!(
            traceparent.ends_with("-01"),
            "a new trace is sampled: {traceparent}"
        );
        assert!(!traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    }

    #[test]
    fn trace_context_is_written_into_http_headers() {
        let mut nats = async_nats::HeaderMap::new();
        nats.insert("traceparent", TRACEPARENT);
        nats.insert("Nats-Msg-Id", "not trace context");
        let kept = trace_headers_of(Some(&nats));
        assert!(kept.get("Nats-Msg-Id").is_none());
        let mut headers = http::HeaderMap::new();
        inject_into_http(&mut headers, &context_from_nats(&kept));
        assert_eq!(headers["traceparent"], TRACEPARENT);
    }

    #[test]
    fn a_malformed_traceparent_gives_no_context() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", "00-zz-00f067aa0ba902b7-01");
        assert!(!context_from_nats(&headers).span().span_context().is_valid());
    }
}
