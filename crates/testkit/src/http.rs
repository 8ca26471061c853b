//! HTTP reads the tests make again and again.

/// `GET url`, the body as text; panics naming `url` when it gets no answer.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
}

/// `GET url`, the body as JSON; panics naming `url` when it gets no answer or no JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> T {
    json_of(http.get(url)).await
}

/// Sends `request`, the answer's body as JSON; panics naming the request when it gets no answer
/// or no JSON.
pub async fn json_of<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
    let (client, request) = request.build_split();
    let request = request.expect("a well-formed request");
    let asked = format!("{} {}", request.method(), request.url());
    client
        .execute(request)
        .await
        .unwrap_or_else(|e| panic!("{asked}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{asked}: not the JSON expected: {e}"))
}
