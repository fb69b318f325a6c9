//! Private channels (IVS playback authorization): a channel created with
//! `authorized: true` plays only with a playback token (an ES384 JWT signed
//! by an imported playback key, `aws:channel-arn` naming the channel) on
//! the first playlist request; every URI the playlists hand out then works
//! without a new token, until the token expires or its key is deleted.
//! Refusals are 403 with the JSON error shape. Public channels need nothing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{EncodePublicKey, LineEnding};
use reqwest::{header, Method};
use serde_json::{json, Value};

mod common;
use common::channel::{go_live, test_video, Broadcaster, Channel, ChannelApi};
use common::Server;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A JWT over any header and payload, signed with `key`.
fn sign(key: &SigningKey, header: &Value, payload: &Value) -> Result<String> {
    let part = |v: &Value| serde_json::to_vec(v).map(|bytes| URL_SAFE_NO_PAD.encode(bytes));
    let input = format!("{}.{}", part(header)?, part(payload)?);
    let sig: Signature = key.sign(input.as_bytes());
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes())))
}

/// A playback key pair whose public half the server imported.
struct PlaybackKey {
    id: String,
    key: SigningKey,
}

impl PlaybackKey {
    async fn import(server: &Server, name: &str) -> Result<Self> {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let pem = VerifyingKey::from(&key).to_public_key_pem(LineEnding::LF)?;
        let body = server.post("/v1/playback-keys", json!({"publicKeyMaterial": pem, "name": name})).await?;
        let id = body["keyPair"]["id"].as_str().context("keyPair.id")?.to_owned();
        Ok(Self { id, key })
    }

    /// A token for `channel` (an id or ARN) that expires at `exp`.
    fn token(&self, channel: &str, exp: i64) -> Result<String> {
        self.token_with(json!({"aws:channel-arn": channel, "aws:access-control-allow-origin": "*", "exp": exp}))
    }

    fn token_with(&self, payload: Value) -> Result<String> {
        sign(&self.key, &json!({"alg": "ES384", "typ": "JWT", "kid": self.id}), &payload)
    }
}

/// A private channel (checked in the CreateChannel answer).
async fn private_channel(server: &Server) -> Result<(Channel, String)> {
    let body = server.post("/v1/channels", json!({"name": "members only", "authorized": true})).await?;
    let c = &body["channel"];
    ensure!(c["authorized"] == true, "{body}");
    let arn = c["arn"].as_str().context("arn")?.to_owned();
    let id = c["id"].as_str().context("id")?.to_owned();
    ensure!(arn.ends_with(&format!("channel/{id}")), "{arn}");
    let channel = Channel {
        id,
        ingest: c["ingestEndpoint"].as_str().context("ingestEndpoint")?.to_owned(),
        playback: c["playbackUrl"].as_str().context("playbackUrl")?.to_owned(),
        key: body["streamKey"].as_str().context("streamKey")?.to_owned(),
    };
    Ok((channel, arn))
}

struct Fetched {
    status: u16,
    cache: String,
    text: String,
}

impl Fetched {
    /// The JSON error's code (empty when the body is not one).
    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.text).ok().and_then(|v| v["code"].as_str().map(str::to_owned)).unwrap_or_default()
    }
}

async fn fetch(server: &Server, url: &str, origin: Option<&str>) -> Result<Fetched> {
    let url = if url.starts_with("http") { url.to_owned() } else { format!("{}{url}", server.base) };
    let mut req = server.http.get(&url);
    if let Some(origin) = origin {
        req = req.header(header::ORIGIN, origin);
    }
    let res = tokio::time::timeout(Duration::from_secs(10), req.send()).await.context("answered in time")??;
    let status = res.status().as_u16();
    let cache = res.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let bytes = tokio::time::timeout(Duration::from_secs(10), res.bytes()).await.context("body in time")??;
    Ok(Fetched { status, cache, text: String::from_utf8_lossy(&bytes).into_owned() })
}

/// `url` must be refused with 403 and `code` in the JSON error shape.
async fn expect_refused(server: &Server, url: &str, code: &str) -> Result<()> {
    let res = fetch(server, url, None).await?;
    ensure!(res.status == 403 && res.code() == code, "{url}: expected 403 {code}, got {} {}", res.status, res.text);
    Ok(())
}

/// Every URI a playlist names: URI lines, `URI="…"` attributes and prefetch lines.
fn uris(playlist: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in playlist.lines() {
        if let Some(uri) = line.strip_prefix("#EXT-X-PREFETCH:") {
            out.push(uri.to_owned());
        } else if line.starts_with('#') {
            out.extend(line.split("URI=\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_owned));
        } else if !line.trim().is_empty() {
            out.push(line.to_owned());
        }
    }
    out
}

/// The session value a playlist's URIs carry (the same on all of them).
fn session_of(playlist: &str) -> Result<String> {
    let sessions: HashSet<String> = uris(playlist)
        .iter()
        .map(|u| u.split("session=").nth(1).map(str::to_owned).with_context(|| format!("{u} has no session:\n{playlist}")))
        .collect::<Result<_>>()?;
    ensure!(sessions.len() == 1, "one session value: {sessions:?}");
    sessions.into_iter().next().context("a URI")
}

/// A live private channel: the server, its channel and ARN, a key, and the
/// broadcaster streaming `seconds` of test video in the background. `None`
/// without ffmpeg.
struct Live {
    server: Server,
    channel: Channel,
    arn: String,
    key: PlaybackKey,
    streaming: tokio::task::JoinHandle<Result<Broadcaster>>,
}

async fn live_private(name: &str, seconds: usize) -> Result<Option<Live>> {
    let server = Server::start(name).await?;
    let Some(video) = test_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(None);
    };
    let (channel, arn) = private_channel(&server).await?;
    let key = PlaybackKey::import(&server, "viewers").await?;
    let (mut host, _) = go_live(&server, &channel).await?;
    let streaming = tokio::spawn(async move { host.stream(&video, 0, seconds * 30).await.map(|_| host) });
    Ok(Some(Live { server, channel, arn, key, streaming }))
}

impl Live {
    fn hls(&self) -> String {
        format!("/hls/{}", self.channel.id)
    }

    /// The media playlist once it lists a complete segment, reached the way
    /// a player does: the multivariant playlist with the token, then the
    /// URI it names.
    async fn media_playlist(&self, token: &str) -> Result<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let index = fetch(&self.server, &format!("{}?token={token}", self.channel.playback), None).await?;
            if index.status == 200 {
                let media_uri = uris(&index.text).into_iter().next().context("a variant")?;
                ensure!(media_uri.starts_with("media.m3u8?session="), "{}", index.text);
                let media = fetch(&self.server, &format!("{}/{media_uri}", self.hls()), None).await?;
                ensure!(media.status == 200, "media: {} {}", media.status, media.text);
                if media.text.lines().any(|l| l.starts_with("seg")) && media.text.contains("#EXT-X-PREFETCH:") {
                    return Ok((media_uri, media.text));
                }
            } else {
                ensure!(index.status == 404, "before the first part: offline; got {} {}", index.status, index.text);
            }
            ensure!(Instant::now() < deadline, "no media playlist with a segment: {} {}", index.status, index.text);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_channel_plays_with_a_token_and_everything_it_hands_out() -> Result<()> {
    let Some(live) = live_private("private-plays", 8).await? else {
        return Ok(());
    };
    let hls = live.hls();
    expect_refused(&live.server, &live.channel.playback, "PLAYBACK_TOKEN_REQUIRED").await?;
    expect_refused(&live.server, &format!("{hls}/media.m3u8"), "PLAYBACK_TOKEN_REQUIRED").await?;
    expect_refused(&live.server, &format!("{hls}/init.mp4"), "PLAYBACK_TOKEN_REQUIRED").await?;

    // The ARN and the bare id both name the channel.
    let token = live.key.token(&live.arn, now() + 600)?;
    let (media_uri, media) = live.media_playlist(&token).await?;
    let session = session_of(&media)?;
    ensure!(media_uri.ends_with(&session), "the same session on both playlists");
    ensure!(!media.contains(&token), "the token itself is not copied into every URI");
    let by_id = live.key.token(&live.channel.id, now() + 600)?;
    ensure!(fetch(&live.server, &format!("{hls}/media.m3u8?token={by_id}"), None).await?.status == 200);

    // Everything the player fetches next works with what the playlist handed out.
    let listed = uris(&media);
    for kind in ["init", "part", "seg"] {
        ensure!(listed.iter().any(|u| u.starts_with(kind)), "the playlist names {kind}:\n{media}");
    }
    for uri in &listed {
        let res = fetch(&live.server, &format!("{hls}/{uri}"), None).await?;
        ensure!(res.status == 200, "{uri}: {} {}", res.status, res.text);
        ensure!(!res.cache.contains("public"), "{uri}: a private answer is not for shared caches: {}", res.cache);
        ensure!(!res.cache.contains("s-maxage"), "{uri}: nor says how long a shared cache may keep it: {}", res.cache);
        let bare = uri.split('?').next().context("path")?;
        expect_refused(&live.server, &format!("{hls}/{bare}"), "PLAYBACK_TOKEN_REQUIRED").await?;
    }
    // A blocking reload keeps the session and the player's own parameters.
    let seg = listed.iter().rev().find(|u| u.starts_with("seg")).context("a segment")?;
    let msn: u64 = seg.trim_start_matches("seg").split('.').next().context("msn")?.parse()?;
    let reload = fetch(&live.server, &format!("{hls}/{media_uri}&_HLS_msn={}", msn + 1), None).await?;
    ensure!(reload.status == 200 && session_of(&reload.text)? == session, "{} {}", reload.status, reload.text);
    ensure!(reload.cache == "private, max-age=2", "a private reload is for this viewer only: {}", reload.cache);

    // A session value cannot be stretched or moved.
    let (exp, rest) = session.split_once('.').context("exp")?;
    let later: i64 = exp.parse::<i64>()? + 3600;
    expect_refused(&live.server, &format!("{hls}/media.m3u8?session={later}.{rest}"), "TOKEN_INVALID").await?;
    let (other, _) = private_channel(&live.server).await?;
    expect_refused(&live.server, &format!("/hls/{}/media.m3u8?session={session}", other.id), "TOKEN_INVALID").await?;

    // Public channels on the same server need nothing.
    let public = live.server.create_channel().await?;
    let res = fetch(&live.server, &public.playback, None).await?;
    ensure!(res.status == 404 && res.text == "channel is offline", "public, offline: {} {}", res.status, res.text);
    live.streaming.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_reload_after_the_token_expires_is_refused() -> Result<()> {
    let Some(live) = live_private("private-expiry", 12).await? else {
        return Ok(());
    };
    // Media first (with a long token), so the short one is used at once.
    live.media_playlist(&live.key.token(&live.channel.id, now() + 600)?).await?;
    let exp = now() + 4;
    let token = live.key.token(&live.channel.id, exp)?;
    let (media_uri, media) = live.media_playlist(&token).await?;
    ensure!(now() < exp, "the playlist came before the expiry");
    let segment = uris(&media).into_iter().find(|u| u.starts_with("seg")).context("a segment")?;
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hls = live.hls();
    expect_refused(&live.server, &format!("{hls}/{media_uri}"), "TOKEN_EXPIRED").await?;
    expect_refused(&live.server, &format!("{hls}/{segment}"), "TOKEN_EXPIRED").await?;
    expect_refused(&live.server, &format!("{}?token={token}", live.channel.playback), "TOKEN_EXPIRED").await?;
    // A fresh token plays again.
    let fresh = live.key.token(&live.channel.id, now() + 600)?;
    live.media_playlist(&fresh).await?;
    live.streaming.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_key_revokes_its_tokens_and_their_sessions() -> Result<()> {
    let Some(live) = live_private("private-revoke", 8).await? else {
        return Ok(());
    };
    let token = live.key.token(&live.channel.id, now() + 600)?;
    let (media_uri, _) = live.media_playlist(&token).await?;
    let other = PlaybackKey::import(&live.server, "second").await?;
    let other_token = other.token(&live.channel.id, now() + 600)?;
    live.server.ok(Method::DELETE, &format!("/v1/playback-keys/{}", live.key.id), None).await?;
    let hls = live.hls();
    expect_refused(&live.server, &format!("{hls}/{media_uri}"), "TOKEN_INVALID").await?;
    expect_refused(&live.server, &format!("{}?token={token}", live.channel.playback), "TOKEN_INVALID").await?;
    // The other key's tokens still play.
    live.media_playlist(&other_token).await?;
    live.streaming.await??;
    Ok(())
}

/// These need no broadcast: authorization comes first, so a token that
/// passes reaches the offline channel (404) and one that does not is a 403.
#[tokio::test]
async fn tokens_that_do_not_fit_are_refused() -> Result<()> {
    let server = Server::start("private-refused").await?;
    let (channel, arn) = private_channel(&server).await?;
    let (other, _) = private_channel(&server).await?;
    let key = PlaybackKey::import(&server, "viewers").await?;
    let url = |token: &str| format!("{}?token={token}", channel.playback);
    let good = key.token(&arn, now() + 600)?;
    let res = fetch(&server, &url(&good), None).await?;
    ensure!(res.status == 404 && res.text == "channel is offline", "a good token gets through: {} {}", res.status, res.text);
    // Without a token, offline or not, a private channel says only 403.
    expect_refused(&server, &channel.playback, "PLAYBACK_TOKEN_REQUIRED").await?;

    expect_refused(&server, &url(&key.token(&other.id, now() + 600)?), "TOKEN_NOT_ALLOWED").await?;
    let lookalike = key.token(&format!("arn:aws:ivs:us-west-2:1:channel/{}x", channel.id), now() + 600)?;
    expect_refused(&server, &url(&lookalike), "TOKEN_NOT_ALLOWED").await?;
    expect_refused(&server, &url(&key.token(&arn, now() - 1)?), "TOKEN_EXPIRED").await?;
    let early = key.token_with(json!({"aws:channel-arn": arn, "exp": now() + 600, "nbf": now() + 300}))?;
    expect_refused(&server, &url(&early), "TOKEN_NOT_YET_VALID").await?;
    expect_refused(&server, &url("not-a-token"), "TOKEN_MALFORMED").await?;
    let no_channel = key.token_with(json!({"exp": now() + 600}))?;
    expect_refused(&server, &url(&no_channel), "TOKEN_MALFORMED").await?;

    // Signed by a key that was never imported, under the imported key's id or none.
    let stranger = SigningKey::random(&mut rand::rngs::OsRng);
    let payload = json!({"aws:channel-arn": arn, "exp": now() + 600});
    let forged = sign(&stranger, &json!({"alg": "ES384", "kid": key.id}), &payload)?;
    expect_refused(&server, &url(&forged), "TOKEN_INVALID").await?;
    expect_refused(&server, &url(&sign(&stranger, &json!({"alg": "ES384"}), &payload)?), "TOKEN_INVALID").await?;
    // Without a kid, the imported key is found.
    let no_kid = sign(&key.key, &json!({"alg": "ES384", "typ": "JWT"}), &payload)?;
    ensure!(fetch(&server, &url(&no_kid), None).await?.status == 404);

    // Only ES384: another alg in the header is refused whatever the signature.
    let good_parts: Vec<&str> = good.split('.').collect();
    for alg in ["none", "HS256", "ES256", "RS256"] {
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!({"alg": alg, "kid": key.id}))?);
        let swapped = format!("{header}.{}.{}", good_parts[1], good_parts[2]);
        expect_refused(&server, &url(&swapped), "TOKEN_INVALID").await?;
        expect_refused(&server, &url(&format!("{header}.{}.", good_parts[1])), "TOKEN_INVALID").await?;
    }
    // A tampered payload no longer matches the signature.
    let tampered = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!({"aws:channel-arn": other.id, "exp": now() + 600}))?);
    expect_refused(&server, &url(&format!("{}.{tampered}.{}", good_parts[0], good_parts[2])), "TOKEN_INVALID").await?;

    // A participant token's key (imported through /v1/public-keys) signs no playback token.
    let participant_key = SigningKey::random(&mut rand::rngs::OsRng);
    let pem = VerifyingKey::from(&participant_key).to_public_key_pem(LineEnding::LF)?;
    let imported = server.post("/v1/public-keys", json!({"publicKeyMaterial": pem})).await?;
    let kid = imported["publicKey"]["id"].as_str().context("id")?;
    let crossed = sign(&participant_key, &json!({"alg": "ES384", "kid": kid}), &payload)?;
    expect_refused(&server, &url(&crossed), "TOKEN_INVALID").await?;

    // aws:access-control-allow-origin: checked against the Origin of the token's request.
    let origins = "https://shop.example, https://*.fans.example";
    let only = key.token_with(json!({"aws:channel-arn": arn, "exp": now() + 600, "aws:access-control-allow-origin": origins}))?;
    for (origin, status) in [("https://shop.example", 404), ("https://eu.fans.example", 404), ("https://evil.example", 403)] {
        let res = fetch(&server, &url(&only), Some(origin)).await?;
        ensure!(res.status == status, "{origin}: {} {}", res.status, res.text);
        if status == 403 {
            ensure!(res.code() == "ORIGIN_NOT_ALLOWED", "{}", res.text);
        }
    }
    ensure!(fetch(&server, &url(&only), None).await?.status == 404, "no Origin: not a browser, as IVS");
    server.stop()
}

#[tokio::test]
async fn playback_keys_and_authorized_channels_through_the_control_plane() -> Result<()> {
    let server = Server::start("private-api").await?;
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let pem = VerifyingKey::from(&key).to_public_key_pem(LineEnding::LF)?;

    // API key protected, like the rest of /v1.
    let (status, body) = server.call(Method::GET, "/v1/playback-keys", None, Some("sck_wrong")).await?;
    ensure!(status == 401 && body["code"] == "UNAUTHORIZED", "{status} {body}");

    let imported = server.post("/v1/playback-keys", json!({"publicKeyMaterial": pem, "name": "web"})).await?;
    let pair = &imported["keyPair"];
    let id = pair["id"].as_str().context("id")?.to_owned();
    ensure!(pair["name"] == "web" && pair["arn"].as_str().is_some_and(|a| a.ends_with(&format!("playback-key/{id}"))), "{imported}");
    ensure!(pair["fingerprint"].as_str().is_some_and(|f| !f.is_empty()) && pair.get("publicKeyMaterial").is_none(), "{imported}");

    let (status, body) = server.api(Method::POST, "/v1/playback-keys", Some(json!({"publicKeyMaterial": pem}))).await?;
    ensure!(status == 409 && body["code"] == "PLAYBACK_KEY_EXISTS", "{status} {body}");
    let (status, body) = server.api(Method::POST, "/v1/playback-keys", Some(json!({"publicKeyMaterial": "nope"}))).await?;
    ensure!(status == 400 && body["code"] == "INVALID_PUBLIC_KEY", "{status} {body}");
    let (status, body) =
        server.api(Method::POST, "/v1/playback-keys", Some(json!({"publicKeyMaterial": pem, "tags": {}}))).await?;
    ensure!(status == 400 && body["code"] == "UNKNOWN_FIELD", "{status} {body}");

    let second_key = SigningKey::random(&mut rand::rngs::OsRng);
    let second_pem = VerifyingKey::from(&second_key).to_public_key_pem(LineEnding::LF)?;
    server.post("/v1/playback-keys", json!({"publicKeyMaterial": second_pem})).await?;
    let page = server.ok(Method::GET, "/v1/playback-keys?maxResults=1", None).await?;
    ensure!(page["keyPairs"].as_array().map(Vec::len) == Some(1) && page["keyPairs"][0]["id"] == id.as_str(), "{page}");
    let next = page["nextToken"].as_str().context("nextToken")?;
    let rest = server.ok(Method::GET, &format!("/v1/playback-keys?nextToken={next}"), None).await?;
    ensure!(rest["keyPairs"].as_array().map(Vec::len) == Some(1) && rest.get("nextToken").is_none(), "{rest}");

    let got = server.ok(Method::GET, &format!("/v1/playback-keys/{id}"), None).await?;
    ensure!(got["keyPair"] == *pair, "{got}");
    let arn = pair["arn"].as_str().context("arn")?;
    let by_arn = server.ok(Method::GET, &format!("/v1/playback-keys/{}", arn.replace('/', "%2F").replace(':', "%3A")), None).await?;
    ensure!(by_arn["keyPair"] == *pair, "by ARN: {by_arn}");

    // Channels: authorized is stored and shown; absent means public.
    let (private, _) = private_channel(&server).await?;
    let public = server.create_channel().await?;
    let got = server.ok(Method::GET, &format!("/v1/channels/{}", private.id), None).await?;
    ensure!(got["channel"]["authorized"] == true, "{got}");
    let got = server.ok(Method::GET, &format!("/v1/channels/{}", public.id), None).await?;
    ensure!(got["channel"]["authorized"] == false, "{got}");
    let listed = server.ok(Method::GET, "/v1/channels", None).await?;
    let flags: Vec<(String, bool)> = listed["channels"]
        .as_array()
        .context("channels")?
        .iter()
        .map(|c| (c["id"].as_str().unwrap_or_default().to_owned(), c["authorized"] == true))
        .collect();
    ensure!(flags == vec![(private.id.clone(), true), (public.id.clone(), false)], "{flags:?}");
    let (status, body) = server.api(Method::POST, "/v1/channels", Some(json!({"authorized": "yes"}))).await?;
    ensure!(status == 400 && body["code"] == "INVALID_FIELD", "{status} {body}");

    // Both survive a restart: the channel stays private, the key still signs.
    let dir = server.stop_keeping_dir();
    let server = Server::start_in(dir).await?;
    let got = server.ok(Method::GET, &format!("/v1/channels/{}", private.id), None).await?;
    ensure!(got["channel"]["authorized"] == true, "{got}");
    let playback = format!("/hls/{}/index.m3u8", private.id); // on the new server's port
    expect_refused(&server, &playback, "PLAYBACK_TOKEN_REQUIRED").await?;
    let token = sign(&key, &json!({"alg": "ES384", "kid": id}), &json!({"aws:channel-arn": private.id, "exp": now() + 60}))?;
    let res = fetch(&server, &format!("{playback}?token={token}"), None).await?;
    ensure!(res.status == 404, "the key still signs after a restart: {} {}", res.status, res.text);

    server.ok(Method::DELETE, &format!("/v1/playback-keys/{id}"), None).await?;
    let (status, body) = server.api(Method::DELETE, &format!("/v1/playback-keys/{id}"), None).await?;
    ensure!(status == 404 && body["code"] == "PLAYBACK_KEY_NOT_FOUND", "{status} {body}");
    expect_refused(&server, &format!("{playback}?token={token}"), "TOKEN_INVALID").await?;
    server.stop()
}

/// A data dir from before channels could be private: its channels are kept
/// and stay public.
#[tokio::test]
async fn channels_stored_before_private_channels_stay_public() -> Result<()> {
    let dir = common::temp_dir("private-migrate")?;
    {
        let db = rusqlite::Connection::open(dir.join("stagecast.db"))?;
        db.execute_batch(
            "CREATE TABLE channels (id TEXT PRIMARY KEY, name TEXT NOT NULL, stream_key TEXT NOT NULL, create_time INTEGER NOT NULL);
             INSERT INTO channels VALUES ('ch-old', 'old show', 'sk_old', 1700000000);",
        )?;
    }
    let server = Server::start_in(dir).await?;
    let got = server.ok(Method::GET, "/v1/channels/ch-old", None).await?;
    ensure!(got["channel"]["name"] == "old show" && got["channel"]["authorized"] == false, "{got}");
    let res = fetch(&server, "/hls/ch-old/index.m3u8", None).await?;
    ensure!(res.status == 404 && res.text == "channel is offline", "public as before: {} {}", res.status, res.text);
    let (private, _) = private_channel(&server).await?;
    expect_refused(&server, &private.playback, "PLAYBACK_TOKEN_REQUIRED").await?;
    server.stop()
}
