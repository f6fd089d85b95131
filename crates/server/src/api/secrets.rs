//! The settings page's Git and Secrets tabs: provider tokens (`/api/add-git-providers`,
//! `/api/unset-provider-tokens`) and custom secrets (`/api/secrets`), in the original's shapes.
//! Values go in and never come out.

use crate::app::AppState;
use crate::auth::Secret;
use crate::error::{ApiError, ApiJson};
use crate::user_secrets::{
    CustomSecret, MIN_SECRET_LEN, PROVIDERS, ProviderToken, is_reserved, is_variable_name,
    valid_host,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/add-git-providers", post(add_git_providers))
        .route("/api/unset-provider-tokens", post(unset_provider_tokens))
        .route("/api/secrets", post(create_secret).get(list_secrets))
        .route(
            "/api/secrets/{id}",
            put(update_secret).delete(delete_secret),
        )
}

#[derive(Deserialize)]
struct ProvidersBody {
    #[serde(default)]
    provider_tokens: BTreeMap<String, TokenBody>,
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

fn saved() -> impl FnOnce(std::io::Error) -> ApiError {
    |e| ApiError::internal("cannot save the secrets", e)
}

/// Sets the tokens given. An empty token keeps the one stored (the UI sends the host alone when
/// only the host changes), as the original does.
async fn add_git_providers(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ProvidersBody>,
) -> Result<Response, ApiError> {
    if let Some(unknown) = body
        .provider_tokens
        .keys()
        .find(|p| !PROVIDERS.iter().any(|(name, _)| name == p))
    {
        return Err(ApiError::bad_request(
            "INVALID_PROVIDER",
            format!(
                "unknown provider {unknown:?}; use {}",
                PROVIDERS.map(|(name, _)| name).join(", ")
            ),
        ));
    }
    let stored = state.user_secrets.get();
    for (provider, given) in &body.provider_tokens {
        let host = given
            .host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty());
        if let Some(host) = host
            && !valid_host(host)
        {
            return Err(ApiError::bad_request(
                "INVALID_HOST",
                format!(
                    "the {provider} host {host:?} must be a host name or address with an optional port (https://, or http:// for this machine only)"
                ),
            ));
        }
        // A stored token is only sent to a new host when it is given again with it.
        let no_token = given.token.as_deref().is_none_or(|t| t.trim().is_empty());
        if no_token
            && let Some(existing) = stored.provider_tokens.get(provider)
            && existing.host.as_deref() != host
        {
            return Err(ApiError::bad_request(
                "TOKEN_REQUIRED",
                format!("send the {provider} token again to use it with another host"),
            ));
        }
    }
    // A token its provider refuses is not stored, as in the original. Only a refusal counts: a
    // provider that cannot be reached (offline, a host not up yet) does not block saving.
    for (provider, given) in &body.provider_tokens {
        let Some(token) = given
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let candidate = ProviderToken {
            token: Secret::new(token.to_owned()),
            host: given.host.clone().filter(|h| !h.trim().is_empty()),
        };
        if let Some(client) = crate::providers::Provider::new(provider, &candidate, None) {
            match client.user().await {
                Err(crate::providers::ProviderError::Refused(_)) => {
                    return Ok((
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"error": format!("Invalid token. Please make sure it is a valid {provider} token.")})),
                    )
                        .into_response());
                }
                Err(e) => tracing::warn!(provider, error = %e, "token not checked"),
                Ok(_) => {}
            }
        }
    }
    state
        .user_secrets
        .update(|secrets| {
            for (provider, given) in body.provider_tokens {
                let host = given
                    .host
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty());
                match given
                    .token
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                {
                    Some(token) => {
                        secrets.provider_tokens.insert(
                            provider,
                            ProviderToken {
                                token: Secret::new(token),
                                host,
                            },
                        );
                    }
                    None => {
                        if let Some(stored) = secrets.provider_tokens.get_mut(&provider) {
                            stored.host = host;
                        }
                    }
                }
            }
            Ok::<(), ()>(())
        })
        .await
        .map_err(saved())?
        .ok();
    Ok(Json(json!({"message": "Git providers stored"})).into_response())
}

async fn unset_provider_tokens(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .user_secrets
        .update(|secrets| {
            secrets.provider_tokens.clear();
            Ok::<(), ()>(())
        })
        .await
        .map_err(saved())?
        .ok();
    Ok(Json(json!({"message": "Unset Git provider tokens"})))
}

async fn list_secrets(State(state): State<AppState>) -> Json<serde_json::Value> {
    let secrets = state.user_secrets.get();
    let list: Vec<serde_json::Value> = secrets
        .custom_secrets
        .iter()
        .map(|(name, s)| json!({"name": name, "description": s.description}))
        .collect();
    Json(json!({"custom_secrets": list}))
}

#[derive(Deserialize)]
struct NewSecret {
    name: String,
    value: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct SecretChange {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

/// The original's refusals: `{"message": ...}` with 400, `{"error": ...}` with 404.
fn refused(status: StatusCode, key: &str, text: String) -> Response {
    (status, Json(json!({ key: text }))).into_response()
}

fn check_name(name: &str) -> Option<Response> {
    if is_reserved(name) {
        return Some(refused(
            StatusCode::BAD_REQUEST,
            "message",
            format!(
                "Secret name {name} is kept for the system: it would change how the agent's shell runs. Choose another name."
            ),
        ));
    }
    (!is_variable_name(name)).then(|| {
        refused(
            StatusCode::BAD_REQUEST,
            "message",
            format!(
                "Secret name {name:?} cannot be used: it becomes an environment variable of the agent's shell, so it must start with a letter or _ and hold only letters, digits and _"
            ),
        )
    })
}

async fn create_secret(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewSecret>,
) -> Result<Response, ApiError> {
    if let Some(refusal) = check_name(&body.name) {
        return Ok(refusal);
    }
    if body.value.chars().count() < MIN_SECRET_LEN {
        return Ok(refused(
            StatusCode::BAD_REQUEST,
            "message",
            format!(
                "A secret's value must have at least {MIN_SECRET_LEN} characters: shorter ones cannot be hidden from the agent's events without mangling them."
            ),
        ));
    }
    let name = body.name.clone();
    let outcome = state
        .user_secrets
        .update(|secrets| {
            if secrets.custom_secrets.contains_key(&body.name) {
                return Err(());
            }
            secrets.custom_secrets.insert(
                body.name,
                CustomSecret {
                    value: Secret::new(body.value),
                    description: body.description.unwrap_or_default(),
                },
            );
            Ok(())
        })
        .await
        .map_err(saved())?;
    Ok(match outcome {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({"message": "Secret created successfully"})),
        )
            .into_response(),
        Err(()) => refused(
            StatusCode::BAD_REQUEST,
            "message",
            format!("Secret {name} already exists"),
        ),
    })
}

enum ChangeRefused {
    NotFound,
    Taken,
}

async fn update_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SecretChange>,
) -> Result<Response, ApiError> {
    if let Some(refusal) = check_name(&body.name) {
        return Ok(refusal);
    }
    let name = body.name.clone();
    let key = id.clone();
    let outcome = state
        .user_secrets
        .update(|secrets| {
            let Some(existing) = secrets.custom_secrets.remove(&key) else {
                return Err(ChangeRefused::NotFound);
            };
            if body.name != key && secrets.custom_secrets.contains_key(&body.name) {
                return Err(ChangeRefused::Taken);
            }
            secrets.custom_secrets.insert(
                body.name,
                CustomSecret {
                    value: existing.value,
                    description: body.description.unwrap_or_default(),
                },
            );
            Ok(())
        })
        .await
        .map_err(saved())?;
    Ok(match outcome {
        Ok(()) => Json(json!({"message": "Secret updated successfully"})).into_response(),
        Err(ChangeRefused::NotFound) => refused(
            StatusCode::NOT_FOUND,
            "error",
            format!("Secret with ID {id} not found"),
        ),
        Err(ChangeRefused::Taken) => refused(
            StatusCode::BAD_REQUEST,
            "message",
            format!("Secret {name} already exists"),
        ),
    })
}

async fn delete_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = id.clone();
    let outcome = state
        .user_secrets
        .update(|secrets| secrets.custom_secrets.remove(&key).map(|_| ()).ok_or(()))
        .await
        .map_err(saved())?;
    Ok(match outcome {
        Ok(()) => Json(json!({"message": "Secret deleted successfully"})).into_response(),
        Err(()) => refused(
            StatusCode::NOT_FOUND,
            "error",
            format!("Secret with ID {id} not found"),
        ),
    })
}
