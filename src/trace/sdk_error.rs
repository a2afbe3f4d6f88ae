//! How the provider's own SDK would name and word a failed call, so the
//! `exception` event reads as MLflow's autologging writes it (the SDK's
//! exception class and `str(exception)`).
//!
//! Sources (openai 3.57, anthropic 2.15, the versions the test venv holds):
//! - openai `_client.py` `_make_status_error` (status -> class) and
//!   `_base_client.py` `_make_status_error_from_response`: `"Error code: N"`,
//!   plus `" - <error.message>"` when the body is JSON whose `error` (or the
//!   body itself) has a non-empty string `message`.
//! - anthropic `_error_classes.py` `ERROR_CLASSES` / `make_status_error`
//!   (status -> class; a few classes also key on `error.details.error_code`,
//!   not modelled) and `_base_client.py`: `"Error code: N - <repr(body)>"` for
//!   a JSON body, else the stripped body text, else `"Error code: N"`.
//!
//! Pure.

use serde_json::Value;

use crate::route::Api;
use crate::trace::pyjson;

/// Whose SDK words the error: Anthropic's for the Messages API, OpenAI's
/// for every other API (Azure and Databricks serving use the OpenAI SDK).
fn is_anthropic(api: Api) -> bool {
    api == Api::Messages
}

/// The SDK's exception class for an HTTP error status.
pub fn class(api: Api, status: u16) -> &'static str {
    if is_anthropic(api) {
        anthropic_class(status)
    } else {
        openai_class(status)
    }
}

fn openai_class(status: u16) -> &'static str {
    match status {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        409 => "ConflictError",
        422 => "UnprocessableEntityError",
        429 => "RateLimitError",
        s if s >= 500 => "InternalServerError",
        _ => "APIStatusError",
    }
}

fn anthropic_class(status: u16) -> &'static str {
    match status {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        402 => "PaymentRequiredError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        408 => "RequestTimeoutError",
        409 => "ConflictError",
        412 => "PreconditionFailedError",
        413 => "ContentTooLargeError",
        422 => "UnprocessableEntityError",
        429 => "RateLimitError",
        431 => "RequestHeaderFieldsTooLargeError",
        499 => "ClientClosedRequestError",
        501 => "HTTPNotImplementedError",
        503 => "ServiceUnavailableError",
        504 => "GatewayTimeoutError",
        529 => "OverloadedError",
        s if s >= 500 => "InternalServerError",
        _ => "APIStatusError",
    }
}

/// The SDK's exception class for an error event inside a 200 response
/// (openai `_streaming.py` raises `APIError`; anthropic's goes through
/// `make_status_error` with status 200, i.e. `APIStatusError`).
pub fn stream_class(api: Api) -> &'static str {
    if is_anthropic(api) {
        "APIStatusError"
    } else {
        "APIError"
    }
}

/// `str(exception)` for an HTTP error status with this response body.
pub fn message(api: Api, status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let head = format!("Error code: {status}");
    if is_anthropic(api) {
        return match pyjson::repr(text) {
            Some(repr) => format!("{head} - {repr}"),
            None if !text.is_empty() => text.to_string(),
            None => head,
        };
    }
    let msg = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        let error = match v.get("error") {
            Some(e) => e.clone(),
            None => v,
        };
        error
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
    });
    match msg {
        Some(m) => format!("{head} - {m}"),
        None => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        std::fs::read(format!("{dir}{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn classes_follow_each_sdk_status_table() {
        let openai = [
            (400, "BadRequestError"),
            (401, "AuthenticationError"),
            (403, "PermissionDeniedError"),
            (404, "NotFoundError"),
            (409, "ConflictError"),
            (422, "UnprocessableEntityError"),
            (429, "RateLimitError"),
            (500, "InternalServerError"),
            (529, "InternalServerError"),
            (402, "APIStatusError"),
        ];
        for (status, want) in openai {
            assert_eq!(class(Api::ChatCompletions, status), want, "{status}");
            assert_eq!(class(Api::Responses, status), want, "{status}");
        }
        let anthropic = [
            (400, "BadRequestError"),
            (402, "PaymentRequiredError"),
            (413, "ContentTooLargeError"),
            (429, "RateLimitError"),
            (500, "InternalServerError"),
            (502, "InternalServerError"),
            (503, "ServiceUnavailableError"),
            (529, "OverloadedError"),
            (418, "APIStatusError"),
        ];
        for (status, want) in anthropic {
            assert_eq!(class(Api::Messages, status), want, "{status}");
        }
    }

    #[test]
    fn openai_message_is_the_error_message_after_the_code() {
        // As the autolog fixture (tests/fixtures/autolog/) recorded it.
        assert_eq!(
            message(Api::ChatCompletions, 400, &fixture("openai_responses/error_400.json")),
            "Error code: 400 - Unsupported parameter: 'temperature' is not supported with this model."
        );
        // No JSON, or no message: the code alone.
        assert_eq!(
            message(Api::Embeddings, 503, b"overloaded"),
            "Error code: 503"
        );
        assert_eq!(
            message(Api::ChatCompletions, 500, br#"{"error":{"message":""}}"#),
            "Error code: 500"
        );
        // A body without an "error" wrapper is its own error object.
        assert_eq!(
            message(Api::ChatCompletions, 404, br#"{"message":"no such model"}"#),
            "Error code: 404 - no such model"
        );
    }

    #[test]
    fn anthropic_message_is_the_python_repr_of_the_body() {
        assert_eq!(
            message(
                Api::Messages,
                400,
                &fixture("anthropic/error_invalid_request.json")
            ),
            "Error code: 400 - {'type': 'error', 'error': {'type': 'invalid_request_error', \
             'message': 'prompt is too long: 208310 tokens > 200000 maximum'}, \
             'request_id': 'req_011CUJ5Kq9tLwYvB3mNcX8dE'}"
        );
        // Not JSON: the stripped text; empty: the code.
        assert_eq!(
            message(Api::Messages, 502, b" Bad gateway\n"),
            "Bad gateway"
        );
        assert_eq!(message(Api::Messages, 502, b""), "Error code: 502");
    }
}
