//! The git providers' REST APIs, for the web UI's repository picker (`/api/user/...`): GitHub
//! and GitLab, answered in the original's shapes (`User`, `Repository`, `Branch`). Each is
//! reached with the user's token at its public API, at its Enterprise or self-hosted server
//! (the token's host: `https://<host>/api/v3` for GitHub, `/api/v4` for GitLab), or at the
//! address `[providers]` gives.

use crate::user_secrets::ProviderToken;
use serde_json::{Value, json};
use std::time::Duration;

/// Why a provider call failed: the token was refused, or anything else.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the {0} token was refused; check it on the settings page (Git tab)")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// One provider, with the user's token.
pub struct Provider {
    pub name: String,
    api: String,
    token: String,
    http: reqwest::Client,
}

/// The API address of `provider`: configured, or from the token's host, or the public one.
fn api_base(provider: &str, host: Option<&str>, configured: Option<&str>) -> Option<String> {
    if let Some(url) = configured.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let suffix = match provider {
        "github" => "/api/v3",
        "gitlab" => "/api/v4",
        _ => return None,
    };
    match host.map(str::trim).filter(|h| !h.is_empty()) {
        Some(host) => {
            let host = host.trim_end_matches('/');
            let base = if host.starts_with("http://") || host.starts_with("https://") {
                host.to_owned()
            } else {
                format!("https://{host}")
            };
            Some(format!("{base}{suffix}"))
        }
        None => Some(
            match provider {
                "github" => "https://api.github.com",
                _ => "https://gitlab.com/api/v4",
            }
            .to_owned(),
        ),
    }
}

impl Provider {
    /// The provider for a stored token, when ohd speaks its API.
    pub fn new(name: &str, token: &ProviderToken, configured: Option<&str>) -> Option<Provider> {
        let api = api_base(name, token.host.as_deref(), configured)?;
        // No redirects: a token header must not follow one to another host.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("ohd/", env!("CARGO_PKG_VERSION")))
            .build()
            .ok()?;
        Some(Provider {
            name: name.to_owned(),
            api,
            token: token.token.expose().to_owned(),
            http,
        })
    }

    /// GET `path` (with `query`): the JSON body and the response's headers.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(Value, reqwest::header::HeaderMap), ProviderError> {
        let request = self.http.get(format!("{}{path}", self.api)).query(query);
        let request = match self.name.as_str() {
            "gitlab" => request.header("PRIVATE-TOKEN", &self.token),
            _ => request
                .bearer_auth(&self.token)
                .header("Accept", "application/vnd.github+json"),
        };
        let hide = |text: String| text.replace(&self.token, "<secret_hidden>");
        let response = request.send().await.map_err(|e| {
            ProviderError::Failed(hide(format!("{} did not answer: {e}", self.name)))
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ProviderError::Refused(self.name.clone()));
        }
        let headers = response.headers().clone();
        if !status.is_success() {
            // Both providers explain an error in `message`; anything else is shown shortened.
            let text = response.text().await.unwrap_or_default();
            let said = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|b| b["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(ProviderError::Failed(hide(format!(
                "{} answered {status}: {said}",
                self.name
            ))));
        }
        let body: Value = response.json().await.map_err(|e| {
            ProviderError::Failed(hide(format!(
                "{} answered what is not JSON: {e}",
                self.name
            )))
        })?;
        Ok((body, headers))
    }

    /// The user the token belongs to (`User`).
    pub async fn user(&self) -> Result<Value, ProviderError> {
        let (u, _) = self.get("/user", &[]).await?;
        Ok(match self.name.as_str() {
            "gitlab" => json!({
                "id": id_text(&u["id"]),
                "login": u["username"],
                "avatar_url": u["avatar_url"].as_str().unwrap_or_default(),
                "company": u["organization"],
                "name": u["name"],
                "email": u["email"].as_str().or(u["public_email"].as_str()),
            }),
            _ => json!({
                "id": id_text(&u["id"]),
                "login": u["login"],
                "avatar_url": u["avatar_url"].as_str().unwrap_or_default(),
                "company": u["company"],
                "name": u["name"],
                "email": u["email"],
            }),
        })
    }

    /// The user's repositories, a page of them (`Repository` list).
    pub async fn repositories(
        &self,
        sort: &str,
        page: u32,
        per_page: u32,
    ) -> Result<Vec<Value>, ProviderError> {
        let (list, headers) = match self.name.as_str() {
            "gitlab" => {
                let order = if sort == "pushed" {
                    "last_activity_at"
                } else {
                    sort
                };
                self.get(
                    "/projects",
                    &[
                        ("membership", "true".into()),
                        ("order_by", order.into()),
                        ("page", page.to_string()),
                        ("per_page", per_page.to_string()),
                    ],
                )
                .await?
            }
            _ => {
                self.get(
                    "/user/repos",
                    &[
                        ("sort", sort.into()),
                        ("page", page.to_string()),
                        ("per_page", per_page.to_string()),
                    ],
                )
                .await?
            }
        };
        let link = link_header(&headers);
        Ok(list
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|r| self.repository(r, link.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Repositories matching `query` (`Repository` list).
    pub async fn search(
        &self,
        query: &str,
        per_page: u32,
        sort: &str,
        order: &str,
    ) -> Result<Vec<Value>, ProviderError> {
        let items = match self.name.as_str() {
            "gitlab" => {
                self.get(
                    "/projects",
                    &[
                        ("search", query.into()),
                        ("per_page", per_page.to_string()),
                        ("order_by", "star_count".into()),
                        ("sort", order.into()),
                    ],
                )
                .await?
                .0
            }
            _ => self
                .get(
                    "/search/repositories",
                    &[
                        ("q", query.into()),
                        ("per_page", per_page.to_string()),
                        ("sort", sort.into()),
                        ("order", order.into()),
                    ],
                )
                .await?
                .0["items"]
                .clone(),
        };
        Ok(items
            .as_array()
            .map(|items| items.iter().map(|r| self.repository(r, None)).collect())
            .unwrap_or_default())
    }

    /// A page of a repository's branches (`PaginatedBranchesResponse`).
    pub async fn branches(
        &self,
        repository: &str,
        page: u32,
        per_page: u32,
    ) -> Result<Value, ProviderError> {
        let query = [
            ("page", page.to_string()),
            ("per_page", per_page.to_string()),
        ];
        let (list, headers) = match self.name.as_str() {
            "gitlab" => {
                let id = urlencode(repository);
                self.get(&format!("/projects/{id}/repository/branches"), &query)
                    .await?
            }
            _ => {
                self.get(&format!("/repos/{repository}/branches"), &query)
                    .await?
            }
        };
        let branches: Vec<Value> = list
            .as_array()
            .map(|items| items.iter().map(branch).collect())
            .unwrap_or_default();
        let has_next = match self.name.as_str() {
            "gitlab" => headers
                .get("x-next-page")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| !v.trim().is_empty()),
            _ => link_header(&headers).is_some_and(|l| l.contains("rel=\"next\"")),
        };
        let total = headers
            .get("x-total")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Ok(json!({
            "branches": branches,
            "has_next_page": has_next,
            "current_page": page,
            "per_page": per_page,
            "total_count": total,
        }))
    }

    /// A repository's branches whose names match `query` (`Branch` list): GitLab's search,
    /// GitHub's branches whose names start with it (its REST API matches prefixes).
    pub async fn search_branches(
        &self,
        repository: &str,
        query: &str,
        per_page: u32,
    ) -> Result<Vec<Value>, ProviderError> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let list = match self.name.as_str() {
            "gitlab" => {
                let id = urlencode(repository);
                self.get(
                    &format!("/projects/{id}/repository/branches"),
                    &[("search", query.into()), ("per_page", per_page.to_string())],
                )
                .await?
                .0
            }
            _ => {
                let prefix: String = query
                    .split('/')
                    .map(urlencode)
                    .collect::<Vec<_>>()
                    .join("/");
                let refs = self
                    .get(
                        &format!("/repos/{repository}/git/matching-refs/heads/{prefix}"),
                        &[],
                    )
                    .await?
                    .0;
                Value::Array(
                    refs.as_array()
                        .map(|refs| {
                            refs.iter()
                                .map(|r| {
                                    json!({
                                        "name": r["ref"].as_str().unwrap_or_default().trim_start_matches("refs/heads/"),
                                        "commit": {"sha": r["object"]["sha"]},
                                        "protected": false,
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            }
        };
        Ok(list
            .as_array()
            .map(|items| items.iter().take(per_page as usize).map(branch).collect())
            .unwrap_or_default())
    }

    /// GitHub App installations the token can use (ids as text).
    pub async fn installations(&self) -> Result<Vec<String>, ProviderError> {
        let (body, _) = self.get("/user/installations", &[]).await?;
        Ok(body["installations"]
            .as_array()
            .map(|list| list.iter().map(|i| id_text(&i["id"])).collect())
            .unwrap_or_default())
    }

    fn repository(&self, r: &Value, link: Option<String>) -> Value {
        match self.name.as_str() {
            "gitlab" => json!({
                "id": id_text(&r["id"]),
                "full_name": r["path_with_namespace"],
                "git_provider": "gitlab",
                "is_public": r["visibility"] == "public",
                "stargazers_count": r["star_count"],
                "link_header": link,
                "pushed_at": r["last_activity_at"],
                "owner_type": if r["namespace"]["kind"] == "group" { "organization" } else { "user" },
                "main_branch": r["default_branch"],
            }),
            _ => json!({
                "id": id_text(&r["id"]),
                "full_name": r["full_name"],
                "git_provider": "github",
                "is_public": !r["private"].as_bool().unwrap_or(false),
                "stargazers_count": r["stargazers_count"],
                "link_header": link,
                "pushed_at": r["pushed_at"],
                "owner_type": if r["owner"]["type"] == "Organization" { "organization" } else { "user" },
                "main_branch": r["default_branch"],
            }),
        }
    }
}

/// A branch as GitHub (`commit.sha`) or GitLab (`commit.id`, `commit.committed_date`) lists
/// it, in the original's `Branch` shape.
fn branch(b: &Value) -> Value {
    json!({
        "name": b["name"],
        "commit_sha": b["commit"]["sha"].as_str().or(b["commit"]["id"].as_str()).unwrap_or_default(),
        "protected": b["protected"].as_bool().unwrap_or(false),
        "last_push_date": b["commit"]["committed_date"],
    })
}

fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn link_header(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("link")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A GitLab project path as one URL path segment.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses_for_public_self_hosted_and_configured_servers() {
        assert_eq!(
            api_base("github", None, None).as_deref(),
            Some("https://api.github.com")
        );
        assert_eq!(
            api_base("github", Some("ghe.example.com"), None).as_deref(),
            Some("https://ghe.example.com/api/v3")
        );
        assert_eq!(
            api_base("gitlab", Some("http://127.0.0.1:8/"), None).as_deref(),
            Some("http://127.0.0.1:8/api/v4")
        );
        assert_eq!(
            api_base("gitlab", None, Some("https://x/api/v4/")).as_deref(),
            Some("https://x/api/v4")
        );
        assert_eq!(api_base("bitbucket", None, None), None);
        assert_eq!(urlencode("group/sub proj"), "group%2Fsub%20proj");
    }
}
