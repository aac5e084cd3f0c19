//! `protond refresh`: asks the running daemon, through its token-protected API
//! (`POST /api/v1/refresh`), for a drift check of every recorded stack and a cycle now. The
//! token is read from the variable `server.token_env` names, never from an argument. It must
//! never write the store or read AWS itself: the daemon does both.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{load_config, runtime};

/// `protond refresh`: posts the request and prints the daemon's answer.
pub(super) fn refresh_cmd(config: &Path, url: Option<&str>) -> Result<ExitCode> {
    let config = load_config(config)?;
    let base = url.map_or_else(|| base_url(config.server.listen), str::to_string);
    let var = &config.server.token_env;
    let token = std::env::var(var).ok().filter(|t| !t.is_empty());
    let Some(token) = token else {
        bail!(
            "the API token is not set: export the variable {var} (server.token_env) with the daemon's token"
        );
    };
    let endpoint = format!("{}/api/v1/refresh", base.trim_end_matches('/'));
    runtime()?.block_on(async move {
        let answer = reqwest::Client::new()
            .post(&endpoint)
            .bearer_auth(token)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {endpoint}: is `protond run` running with its server enabled? (pass --url otherwise)"))?;
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("the daemon at {endpoint} refused the refresh ({status}): {}", body.trim());
        }
        println!("Refresh scheduled: the daemon fetches every repo and checks every stack for drift now.");
        Ok(ExitCode::SUCCESS)
    })
}

/// `http://<listen>`, with an unspecified address (`0.0.0.0`, `::`) as the loopback one.
fn base_url(listen: std::net::SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        listen.ip()
    };
    format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unspecified_listen_address_is_reached_on_loopback() {
        let a = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(super::base_url(a), "http://127.0.0.1:8080");
        let a = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(super::base_url(a), "http://127.0.0.1:9");
    }
}
