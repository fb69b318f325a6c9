//! TURN credentials (`--turn-url`, `--turn-secret`) checked by the real
//! TURN server: Debian's coturn with `use-auth-secret`, started by the test,
//! and coturn's own client `turnutils_uclient`. And the WHIP endpoints hand
//! the same ICE servers to clients as `Link` headers (RFC 9725 §4.4).

use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use reqwest::Method;
use serde_json::json;
use stagecast_server::config::{Secret, TurnConfig};
use stagecast_server::turn;
use str0m::Rtc;
use std::time::Instant;

mod common;
use common::coturn::Coturn;
use common::{link_values, sendonly, Server};

const SECRET: &str = "coturn-shared-secret";

fn turn_config(port: u16) -> TurnConfig {
    TurnConfig {
        urls: vec![format!("turn:127.0.0.1:{port}?transport=tcp")],
        secret: Some(Secret(SECRET.to_owned())),
        lifetime: Duration::from_secs(3600),
        stun_urls: vec![format!("stun:127.0.0.1:{port}")],
    }
}

/// `(username, credential)` of the TURN entry in `Link` header values.
fn link_credentials(links: &[String]) -> Result<(String, String)> {
    let turn = links.iter().find(|l| l.starts_with("<turn:")).context("no TURN Link header")?;
    let param = |name: &str| -> Result<String> {
        let start = turn.find(&format!("; {name}=\"")).with_context(|| format!("no {name} in {turn}"))? + name.len() + 4;
        let rest = turn.get(start..).context("cut")?;
        Ok(rest.get(..rest.find('"').context("unterminated")?).context("cut")?.to_owned())
    };
    ensure!(turn.contains("rel=\"ice-server\"") && turn.contains("credential-type=\"password\""), "{turn}");
    Ok((param("username")?, param("credential")?))
}

#[tokio::test]
async fn coturn_grants_an_allocation_to_our_credentials_and_refuses_tampered_ones() -> Result<()> {
    let coturn = Coturn::start(SECRET)?;
    let config = turn_config(coturn.port);
    let now = chrono::Utc::now().timestamp();
    let servers = turn::ice_servers(&config, now, "pAlice");
    let entry = servers.iter().find(|s| s.username.is_some()).context("no TURN entry")?;
    let (user, credential) = (entry.username.clone().unwrap_or_default(), entry.credential.clone().unwrap_or_default());
    ensure!(user.ends_with(":pAlice"), "username {user}");

    ensure!(coturn.allocates(&user, &credential)?, "coturn refused our credential; log:\n{}", coturn.log());

    let mut tampered = credential.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    ensure!(!coturn.allocates(&user, &String::from_utf8(tampered)?)?, "a tampered credential was accepted");
    let other_secret = turn::credential("another secret", &user);
    ensure!(!coturn.allocates(&user, &other_secret)?, "a credential from another secret was accepted");
    // Past its expiry (here: a token that expired a minute ago) it is refused.
    let expired = turn::ice_servers_until(&config, now, "pAlice", now - 60);
    let expired = expired.iter().find(|s| s.username.is_some()).context("no TURN entry")?;
    ensure!(
        !coturn.allocates(expired.username.as_deref().unwrap_or_default(), expired.credential.as_deref().unwrap_or_default())?,
        "an expired credential was accepted"
    );
    Ok(())
}

#[tokio::test]
async fn whip_endpoints_hand_out_working_turn_credentials_only_to_authenticated_clients() -> Result<()> {
    let coturn = Coturn::start(SECRET)?;
    let server = Server::start_with("turn-links", |c| c.turn = turn_config(coturn.port)).await?;
    let (_, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"])]).await?;
    let alice = &tokens[0];
    let publish = format!("{}/v1/stage/whip/publish", server.base);

    // A probe or a CORS preflight carries no token: no credentials.
    let res = server.http.request(Method::OPTIONS, &publish).send().await?;
    assert_eq!(res.status().as_u16(), 204);
    assert!(link_values(res.headers()).is_empty());
    let res = server
        .http
        .request(Method::OPTIONS, &publish)
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await?;
    assert!(res.status().is_success() && link_values(res.headers()).is_empty());
    let res = server.http.request(Method::OPTIONS, &publish).bearer_auth("x.y.z").send().await?;
    assert!(link_values(res.headers()).is_empty(), "a forged token got credentials");

    // With the participant's token: STUN and TURN, and coturn takes the credential.
    let res = server.http.request(Method::OPTIONS, &publish).bearer_auth(&alice.token).send().await?;
    let links = link_values(res.headers());
    assert!(links.contains(&format!("<stun:127.0.0.1:{}>; rel=\"ice-server\"", coturn.port)), "{links:?}");
    let (user, credential) = link_credentials(&links)?;
    ensure!(user.ends_with(&format!(":{}", alice.participant_id)), "username {user} does not name the participant");
    ensure!(coturn.allocates(&user, &credential)?, "coturn refused the OPTIONS credential");

    // The event plane's first frame (CONFIG) carries them too, for the
    // SDK's peer connections.
    let ws = server.join(alice).await?;
    let servers = ws.ice_servers.clone().context("no CONFIG")?;
    let entry = servers.iter().find(|s| s.username.is_some()).context("no TURN entry in CONFIG")?;
    ensure!(entry.urls == vec![format!("turn:127.0.0.1:{}?transport=tcp", coturn.port)], "CONFIG urls {:?}", entry.urls);
    let (user, credential) = (entry.username.clone().unwrap_or_default(), entry.credential.clone().unwrap_or_default());
    ensure!(user.ends_with(&format!(":{}", alice.participant_id)), "CONFIG username {user}");
    ensure!(coturn.allocates(&user, &credential)?, "coturn refused the CONFIG credential");

    // The 201 answer carries them too.
    let mut rtc = Rtc::builder().build(Instant::now());
    let (offer, _, _) = common::offer(&mut rtc, &sendonly())?;
    let created =
        server.post_sdp("/v1/stage/whip/publish", Some(&alice.token), &offer).await?.map_err(|e| anyhow!("publish refused: {e:?}"))?;
    let (user, credential) = link_credentials(&created.links)?;
    ensure!(coturn.allocates(&user, &credential)?, "coturn refused the answer's credential");

    // The channel ingest endpoint: credentials for the stream key's holder only.
    let channel = server.post("/v1/channels", json!({"name": "show"})).await?;
    let (id, key) = (channel["channel"]["id"].as_str().context("id")?, channel["streamKey"].as_str().context("key")?);
    let ingest = format!("{}/v1/channels/{id}/whip", server.base);
    let res = server.http.request(Method::OPTIONS, &ingest).bearer_auth("sk_wrong").send().await?;
    assert_eq!(res.status().as_u16(), 204);
    assert!(link_values(res.headers()).is_empty(), "a wrong stream key got credentials");
    let res = server.http.request(Method::OPTIONS, &ingest).bearer_auth(key).send().await?;
    let (user, credential) = link_credentials(&link_values(res.headers()))?;
    ensure!(user.ends_with(&format!(":{id}")), "username {user} does not name the channel");
    ensure!(coturn.allocates(&user, &credential)?, "coturn refused the ingest credential");
    Ok(())
}
