//! `GET /api/v1/client-config`: what the web page cannot know by itself.
//! The sockets listen on another port than the page (WS_BIND, not BIND),
//! so the page asks where they are instead of guessing.

use actix_web::{HttpRequest, web};
use serde::Serialize;

use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientConfig {
    /// Where `socket.io-client` connects (it appends `/socket.io/`).
    socket_url: String,
    /// The development sign-in (`POST /api/v1/dev/token`) is mounted.
    dev: bool,
}

/// Where the web client's sockets connect; no token needed.
#[utoipa::path(
    get,
    path = "/api/v1/client-config",
    tag = "web",
    responses((status = 200, description = "The web client's settings", body = ClientConfig)),
)]
pub async fn get_client_config(state: web::Data<AppState>, req: HttpRequest) -> web::Json<ClientConfig> {
    let config = &state.config;
    let socket_url = match &config.public_socket_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let info = req.connection_info();
            // The name the browser used for this server, on the sockets'
            // port: right for a laptop (127.0.0.1, localhost) and for a
            // host reached by its address alike.
            format!(
                "{}://{}:{}",
                info.scheme(),
                host_name(info.host()),
                config.ws_bind.port()
            )
        }
    };
    web::Json(ClientConfig {
        socket_url,
        dev: config.dev,
    })
}

/// `example.com:8080` -> `example.com`; `[::1]:8080` -> `[::1]`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.split(':').next().unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn the_port_is_taken_off_the_host() {
        assert_eq!(host_name("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }
}
