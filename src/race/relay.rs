//! The chosen answer of a race on its way to the client: its body is
//! streamed while the client is watched, then its connection goes back to
//! the pool.

use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession as ClientSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::Duration;

/// The next chunk of `up`'s response body (`None` at its end). As in
/// pingora's own relay, the client is read while the backend is awaited
/// (`watch_client`, until it sends bytes of a next request, which pingora
/// keeps): a client that leaves ends the relay, and the client transport
/// writes out what it holds first (`proxy::write_buffer`), so the start of
/// a body the backend sends slowly is not held back.
pub async fn next_chunk(
    session: &mut Session,
    up: &mut ClientSession,
    watch_client: &mut bool,
) -> Result<Option<bytes::Bytes>> {
    loop {
        tokio::select! {
            c = up.read_response_body() => return c,
            r = session.downstream_session.read_body_or_idle(true), if *watch_client => {
                // the client's, not a proxy error (not logged, see
                // `suppress_error_log`)
                r.map_err(|e| e.into_down())?;
                *watch_client = false;
            }
        }
    }
}

/// Streams the chosen answer to the client, then returns its connection to
/// the pool.
pub(super) async fn relay(
    session: &mut Session,
    connector: &Connector,
    peer: &HttpPeer,
    mut up: ClientSession,
    mut resp: Box<ResponseHeader>,
    read: Duration,
) -> Result<()> {
    let no_body = session.req_header().method == http::Method::HEAD
        || matches!(resp.status.as_u16(), 204 | 304);
    if !no_body
        && !resp.headers.contains_key(http::header::CONTENT_LENGTH)
        && !resp.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    crate::proxy::clean_response(session, &mut resp);
    let eos = no_body || up.response_done();
    session.write_response_header(resp, eos).await?;
    if !eos {
        // the body is bounded by `timeouts.read` per read, never by the
        // request deadline (which ended with the head)
        up.set_read_timeout(Some(read));
        let mut watch_client = true;
        while let Some(c) = next_chunk(session, &mut up, &mut watch_client).await? {
            session.write_response_body(Some(c), false).await?;
        }
        session.write_response_body(None, true).await?;
    }
    connector
        .release_http_session(up, peer, peer.options.idle_timeout)
        .await;
    Ok(())
}
