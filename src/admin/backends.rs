//! `POST`, `DELETE` and `PATCH /backends`: adding, removing and draining a
//! backend of a pool through [`crate::reload::Reloader::change`] (saved to
//! `admin.state_file`, then the live table is rebuilt).

use super::{bad_request, AdminApi};
use crate::config::{backend_from_url, AddedBackend, BackendConfig, Config};
use crate::reload::ReloadError;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

impl AdminApi {
    pub(super) async fn backends(&self, method: &Method, body: &[u8]) -> (StatusCode, Value) {
        let req: BackendRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return bad_request(format!("invalid JSON body: {e}")),
        };
        let outcome = match *method {
            Method::POST => {
                let added = match resolve(req.url.clone(), req.weight).await {
                    Ok(b) => b,
                    Err(e) => return bad_request(e),
                };
                self.reloader
                    .change(|state, live| {
                        let pool = pool_name(live, req.pool.as_deref())?;
                        not_discovering(live, &pool)?;
                        let p = &live.pools[&pool];
                        if p.backends
                            .iter()
                            .any(|b| b.url == added.url || b.addr == added.addr)
                        {
                            return Err(ReloadError::Refused(
                                409,
                                format!("pool {pool} already has {}", added.url),
                            ));
                        }
                        let ch = state.pools.entry(pool).or_default();
                        ch.removed.retain(|u| *u != added.url);
                        ch.enabled.remove(&added.url);
                        ch.added.push(AddedBackend {
                            url: added.url.clone(),
                            weight: req.weight,
                        });
                        Ok(())
                    })
                    .await
                    .map(|()| StatusCode::CREATED)
            }
            Method::DELETE => {
                let url = normalise(&req.url).await;
                self.reloader
                    .change(|state, live| {
                        let pool = pool_name(live, req.pool.as_deref())?;
                        known_backend(live, &pool, &url)?;
                        not_discovering(live, &pool)?;
                        let ch = state.pools.entry(pool).or_default();
                        ch.added.retain(|a| a.url != url);
                        // also when it was admin-added: the file may list it too
                        if !ch.removed.contains(&url) {
                            ch.removed.push(url.clone());
                        }
                        ch.enabled.remove(&url);
                        Ok(())
                    })
                    .await
                    .map(|()| StatusCode::OK)
            }
            _ => {
                let Some(enabled) = req.enabled else {
                    return bad_request("PATCH /backends needs \"enabled\": true or false".into());
                };
                let url = normalise(&req.url).await;
                self.reloader
                    .change(|state, live| {
                        let pool = pool_name(live, req.pool.as_deref())?;
                        known_backend(live, &pool, &url)?;
                        state
                            .pools
                            .entry(pool)
                            .or_default()
                            .enabled
                            .insert(url.clone(), enabled);
                        Ok(())
                    })
                    .await
                    .map(|()| StatusCode::OK)
            }
        };
        match outcome {
            Ok(code) => (code, json!({ "result": "ok" })),
            Err(ReloadError::Refused(code, msg)) => (
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                json!({ "error": msg }),
            ),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            ),
        }
    }
}

/// Body of the `/backends` requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendRequest {
    pool: Option<String>,
    url: String,
    weight: Option<usize>,
    enabled: Option<bool>,
}

/// The pool a request names, or the default pool; 404 when unknown.
fn pool_name(live: &Config, asked: Option<&str>) -> Result<String, ReloadError> {
    let name =
        match asked {
            Some(n) => n.to_string(),
            None => live.routing.default_pool.clone().ok_or_else(|| {
                ReloadError::Refused(404, "no pool given and no default_pool".into())
            })?,
        };
    if live.pools.contains_key(&name) {
        Ok(name)
    } else {
        Err(ReloadError::Refused(404, format!("unknown pool {name:?}")))
    }
}

fn known_backend(live: &Config, pool: &str, url: &str) -> Result<(), ReloadError> {
    if live.pools[pool].backends.iter().any(|b| b.url == url) {
        Ok(())
    } else {
        Err(ReloadError::Refused(
            404,
            format!("pool {pool} has no backend {url}"),
        ))
    }
}

/// A backend from a URL, resolved on the blocking pool (DNS blocks).
async fn resolve(url: String, weight: Option<usize>) -> Result<BackendConfig, String> {
    tokio::task::spawn_blocking(move || backend_from_url(&url, weight))
        .await
        .unwrap_or_else(|e| Err(format!("cannot resolve the URL: {e}")))
}

/// Refuses adding to or removing from a pool whose members come from DNS
/// (the next lookup would undo it); draining with `PATCH` stays allowed.
fn not_discovering(live: &Config, pool: &str) -> Result<(), ReloadError> {
    match &live.pools[pool].discovery {
        Some(d) => Err(ReloadError::Refused(
            409,
            format!(
                "pool {pool} takes its members from DNS ({}): change the DNS records or the \
                 file's `backends:` instead (PATCH /backends still drains a backend)",
                d.dns
            ),
        )),
        None => Ok(()),
    }
}

/// The URL as the configuration stores it (`scheme://host:port`).
async fn normalise(url: &str) -> String {
    resolve(url.to_string(), None)
        .await
        .map_or_else(|_| url.trim().to_string(), |b| b.url)
}
