//! HTTP errors: always JSON `{"error": "...", "code": "..."}` with the right status.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ohd_protocol::{ConversationId, InvalidConversationId};
use ohd_store::StoreError;
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn conversation_not_found(id: &ConversationId) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "CONVERSATION$NOT_FOUND",
            format!("conversation {id} not found"),
        )
    }

    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        // The detail goes to the log; the client gets a message that reveals nothing inside.
        tracing::error!(error = %error, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("{context}; see the server log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ohd_metrics::metrics().error(self.code);
        let body = serde_json::json!({"error": self.message, "code": self.code});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<InvalidConversationId> for ApiError {
    fn from(e: InvalidConversationId) -> Self {
        ApiError::bad_request("CONVERSATION$INVALID_ID", e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ConversationNotFound(id) => ApiError::conversation_not_found(&id),
            StoreError::ConversationExists(id) => ApiError::new(
                StatusCode::CONFLICT,
                "CONVERSATION$EXISTS",
                format!("conversation {id} already exists"),
            ),
            other => ApiError::internal("storage failed", other),
        }
    }
}

/// A JSON body whose every failure (too large, not JSON, wrong shape) is an [`ApiError`].
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|e| match e {
                BytesRejection::FailedToBufferBody(inner)
                    if inner.body_text().contains("length limit") =>
                {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PAYLOAD_TOO_LARGE",
                        "the request body is larger than the server accepts",
                    )
                }
                other => ApiError::bad_request("INVALID_BODY", other.body_text()),
            })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(body).map(ApiJson).map_err(|e| {
            let status = if e.is_data() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, "INVALID_BODY", format!("invalid JSON body: {e}"))
        })
    }
}

/// Query parameters whose parse failures are [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("INVALID_QUERY", e.body_text()))
    }
}
