//! Participant tokens: ES384 mint/verify, expiry, tampering, imported keys
//! (self-signed tokens) and capability checks.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use stagecast_protocol::token::{Capability, ParticipantClaims, TokenCapabilities};
use stagecast_server::auth::{AuthError, KeyRing};
use stagecast_server::store::SqliteStore;

mod common;
use common::{temp_dir, Server};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(stage: &str, exp: i64) -> ParticipantClaims {
    ParticipantClaims {
        topic: stage.to_owned(),
        jti: "participant-1".to_owned(),
        user_id: "ada".to_owned(),
        attributes: BTreeMap::from([("username".to_owned(), "Ada".to_owned())]),
        capabilities: TokenCapabilities { allow_publish: true, allow_subscribe: true },
        exp,
        iat: now(),
        events_url: "ws://127.0.0.1:8080/v1/stage/events".to_owned(),
        whip_url: "http://127.0.0.1:8080/v1/stage/whip".to_owned(),
        version: "1.0".to_owned(),
    }
}

fn keyring(name: &str) -> anyhow::Result<(KeyRing, PathBuf)> {
    let dir = temp_dir(name)?;
    let store = SqliteStore::open(&dir.join("db.sqlite"))?;
    Ok((KeyRing::load_or_create(&dir, &store)?, dir))
}

fn parts(token: &str) -> anyhow::Result<(String, String, String)> {
    let v: Vec<&str> = token.split('.').collect();
    anyhow::ensure!(v.len() == 3, "token has {} parts", v.len());
    Ok((v[0].to_owned(), v[1].to_owned(), v[2].to_owned()))
}

fn b64json(v: &Value) -> anyhow::Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(v)?))
}

/// A JWT signed with any key, for self-signed and forged tokens.
fn sign_with(key: &SigningKey, header: &Value, claims: &ParticipantClaims) -> anyhow::Result<String> {
    let input = format!("{}.{}", b64json(header)?, URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
    let sig: Signature = key.sign(input.as_bytes());
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes())))
}

#[test]
fn mint_verify_round_trip_and_key_persists() -> anyhow::Result<()> {
    let (ring, dir) = keyring("roundtrip")?;
    let c = claims("st-1", now() + 600);
    let token = ring.mint(&c)?;
    assert_eq!(ring.verify(&token, now())?, c);

    let (h, _, s) = parts(&token)?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h)?)?;
    assert_eq!(header["alg"], "ES384");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], ring.server_kid());
    assert_eq!(URL_SAFE_NO_PAD.decode(s)?.len(), 96, "ES384 signatures are r||s, 96 bytes");

    // The key file survives a restart and is private.
    let key_file = dir.join(stagecast_server::auth::SIGNING_KEY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file)?.permissions().mode() & 0o777, 0o600);
    }
    let store = SqliteStore::open(&dir.join("db.sqlite"))?;
    let again = KeyRing::load_or_create(&dir, &store)?;
    assert_eq!(again.verify(&token, now())?, c);

    // Another data dir has another key.
    let (other, other_dir) = keyring("roundtrip-other")?;
    assert!(matches!(other.verify(&token, now()), Err(AuthError::Invalid(_))));
    std::fs::remove_dir_all(dir)?;
    std::fs::remove_dir_all(other_dir)?;
    Ok(())
}

#[test]
fn expired_tokens_are_refused() -> anyhow::Result<()> {
    let (ring, dir) = keyring("expiry")?;
    let exp = now() + 60;
    let token = ring.mint(&claims("st-1", exp))?;
    assert!(ring.verify(&token, exp - 1).is_ok());
    assert!(matches!(ring.verify(&token, exp), Err(AuthError::Expired)));
    assert!(matches!(ring.verify(&token, exp + 3600), Err(AuthError::Expired)));
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn tampered_tokens_are_refused() -> anyhow::Result<()> {
    let (ring, dir) = keyring("tamper")?;
    let token = ring.mint(&claims("st-1", now() + 600))?;
    let (h, p, s) = parts(&token)?;

    // Payload changed (another stage, more capabilities), signature kept.
    let mut forged = claims("st-other", now() + 600);
    forged.user_id = "mallory".to_owned();
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged)?);
    let e = ring.verify(&format!("{h}.{forged_payload}.{s}"), now()).err();
    assert!(matches!(e, Some(AuthError::Invalid(_))), "{e:?}");
    // Payload that is not even base64: still a signature failure first.
    let e = ring.verify(&format!("{h}.{p}x.{s}"), now()).err();
    assert!(matches!(e, Some(AuthError::Invalid(_))), "{e:?}");

    // Signature changed.
    let mut sig = URL_SAFE_NO_PAD.decode(&s)?;
    sig[10] ^= 0x01;
    let e = ring.verify(&format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(&sig)), now()).err();
    assert!(matches!(e, Some(AuthError::Invalid(_))), "{e:?}");
    // Truncated signature.
    let e = ring.verify(&format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(&sig[..64])), now()).err();
    assert!(matches!(e, Some(AuthError::Invalid(_))), "{e:?}");

    // Wrong algorithm in the header (signature unchanged, and re-signed).
    for alg in ["none", "HS256", "ES256", "es384"] {
        let header = b64json(&json!({"alg": alg, "typ": "JWT"}))?;
        let e = ring.verify(&format!("{header}.{p}.{s}"), now()).err();
        assert!(matches!(e, Some(AuthError::Invalid(_))), "{alg}: {e:?}");
        let e = ring.verify(&format!("{header}.{p}."), now()).err();
        assert!(matches!(e, Some(AuthError::Invalid(_))), "{alg} unsigned: {e:?}");
    }

    // Unknown key id.
    let header = b64json(&json!({"alg": "ES384", "kid": "someone-else"}))?;
    assert!(matches!(ring.verify(&format!("{header}.{p}.{s}"), now()), Err(AuthError::Invalid(_))));

    // Not a JWT at all.
    for bad in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.e30", &format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode("not json"))]
    {
        let e = ring.verify(bad, now()).err();
        assert!(matches!(e, Some(AuthError::Malformed(_))), "{bad:?}: {e:?}");
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn attributes_over_one_kilobyte_are_refused_at_mint() -> anyhow::Result<()> {
    let (ring, dir) = keyring("attrs")?;
    let mut c = claims("st-1", now() + 600);
    c.attributes = BTreeMap::from([("k".to_owned(), "v".repeat(1023))]);
    assert!(ring.mint(&c).is_ok(), "exactly 1024 bytes is allowed");
    c.attributes = BTreeMap::from([("k".to_owned(), "v".repeat(1024))]);
    assert!(matches!(ring.mint(&c), Err(AuthError::AttributesTooLarge { size: 1025 })));
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

// ---- through a running server ----

fn code(result: Result<ParticipantClaims, stagecast_server::AppError>) -> &'static str {
    match result {
        Ok(_) => "OK",
        Err(e) => e.code,
    }
}

#[tokio::test]
async fn self_signed_tokens_need_an_imported_key() -> anyhow::Result<()> {
    let server = Server::start("imported").await?;
    let stage = server.post("/v1/stages", json!({"name": "self-signed"})).await?;
    let stage_id = stage["stage"]["id"].as_str().ok_or_else(|| anyhow::anyhow!("no stage id"))?.to_owned();

    let own = SigningKey::random(&mut rand::rngs::OsRng);
    let mut c = claims(&stage_id, now() + 600);
    c.jti = "self-signed-1".to_owned();
    let unkeyed = sign_with(&own, &json!({"alg": "ES384", "typ": "JWT"}), &c)?;
    assert_eq!(code(server.running.state.auth.authorize(&unkeyed, Capability::Join)), "TOKEN_INVALID");

    let pem = VerifyingKey::from(&own).to_public_key_pem(LineEnding::LF)?;
    let imported = server.post("/v1/public-keys", json!({"publicKeyMaterial": pem, "name": "mine"})).await?;
    let kid = imported["publicKey"]["id"].as_str().ok_or_else(|| anyhow::anyhow!("no key id"))?.to_owned();
    assert_eq!(imported["publicKey"]["name"], "mine");
    assert!(imported["publicKey"]["fingerprint"].as_str().is_some_and(|f| !f.is_empty()));

    assert_eq!(code(server.running.state.auth.authorize(&unkeyed, Capability::Join)), "OK");
    let keyed = sign_with(&own, &json!({"alg": "ES384", "typ": "JWT", "kid": kid}), &c)?;
    let got = server.running.state.auth.authorize(&keyed, Capability::Publish)?;
    assert_eq!(got, c);
    // The kid must name the key that signed.
    let other = SigningKey::random(&mut rand::rngs::OsRng);
    let wrong = sign_with(&other, &json!({"alg": "ES384", "kid": kid}), &c)?;
    assert_eq!(code(server.running.state.auth.authorize(&wrong, Capability::Join)), "TOKEN_INVALID");

    // Importing the same key twice is a conflict; garbage is a 400.
    let res = server
        .http
        .post(format!("{}/v1/public-keys", server.base))
        .bearer_auth(&server.api_key)
        .json(&json!({"publicKeyMaterial": pem}))
        .send()
        .await?;
    assert_eq!(res.status(), 409);
    let res = server
        .http
        .post(format!("{}/v1/public-keys", server.base))
        .bearer_auth(&server.api_key)
        .json(&json!({"publicKeyMaterial": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}))
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await?;
    assert_eq!(body["code"], "INVALID_PUBLIC_KEY");

    // Imported keys are loaded again on restart.
    let reloaded = KeyRing::load_or_create(&server.dir, server.running.state.store.as_ref())?;
    assert_eq!(reloaded.verify(&keyed, now())?, c);

    // A self-signed token for a stage that does not exist.
    let mut nowhere = c.clone();
    nowhere.topic = "st-nowhere".to_owned();
    let t = sign_with(&own, &json!({"alg": "ES384", "kid": kid}), &nowhere)?;
    assert_eq!(code(server.running.state.auth.authorize(&t, Capability::Join)), "STAGE_NOT_FOUND");
    server.stop()
}

#[tokio::test]
async fn capabilities_are_checked() -> anyhow::Result<()> {
    let server = Server::start("caps").await?;
    let state = &server.running.state.auth;
    let stage = server.post("/v1/stages", json!({})).await?;
    let stage_id = stage["stage"]["id"].as_str().ok_or_else(|| anyhow::anyhow!("no stage id"))?.to_owned();
    let token_for = |caps: Value| {
        let server = &server;
        let stage_id = stage_id.clone();
        async move {
            let t = server.post(&format!("/v1/stages/{stage_id}/tokens"), json!({"capabilities": caps})).await?;
            anyhow::Ok(t["participantToken"]["token"].as_str().unwrap_or_default().to_owned())
        }
    };
    let sub_only = token_for(json!(["SUBSCRIBE"])).await?;
    assert_eq!(code(state.authorize(&sub_only, Capability::Subscribe)), "OK");
    assert_eq!(code(state.authorize(&sub_only, Capability::Join)), "OK");
    assert_eq!(code(state.authorize(&sub_only, Capability::Publish)), "TOKEN_NOT_ALLOWED");
    let err = state.authorize(&sub_only, Capability::Publish).err().ok_or_else(|| anyhow::anyhow!("allowed"))?;
    assert_eq!(err.status, 403);

    let pub_only = token_for(json!(["PUBLISH"])).await?;
    assert_eq!(code(state.authorize(&pub_only, Capability::Publish)), "OK");
    assert_eq!(code(state.authorize(&pub_only, Capability::Subscribe)), "TOKEN_NOT_ALLOWED");

    let both = token_for(json!(["PUBLISH", "SUBSCRIBE"])).await?;
    assert_eq!(code(state.authorize(&both, Capability::Publish)), "OK");
    assert_eq!(code(state.authorize(&both, Capability::Subscribe)), "OK");

    // authorize maps token failures to their codes and statuses.
    let err = state.authorize("not-a-token", Capability::Join).err().ok_or_else(|| anyhow::anyhow!("allowed"))?;
    assert_eq!((err.status.as_u16(), err.code), (401, "TOKEN_MALFORMED"));
    let mut expired = claims(&stage_id, now() - 1);
    expired.jti = "old".to_owned();
    let expired = state.keys.mint(&expired)?;
    let err = state.authorize(&expired, Capability::Join).err().ok_or_else(|| anyhow::anyhow!("allowed"))?;
    assert_eq!((err.status.as_u16(), err.code), (401, "TOKEN_EXPIRED"));
    server.stop()
}

/// A JWT over any JSON payload, for claims `ParticipantClaims` cannot hold (`nbf`).
fn sign_json(key: &SigningKey, header: &Value, payload: &Value) -> anyhow::Result<String> {
    let input = format!("{}.{}", b64json(header)?, b64json(payload)?);
    let sig: Signature = key.sign(input.as_bytes());
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes())))
}

#[tokio::test]
async fn imported_key_tokens_meet_the_same_rules_as_minted_ones() -> anyhow::Result<()> {
    let server = Server::start("imported-rules").await?;
    let state = &server.running.state.auth;
    let stage = server.post("/v1/stages", json!({"name": "self-signed rules"})).await?;
    let stage_id = stage["stage"]["id"].as_str().ok_or_else(|| anyhow::anyhow!("no stage id"))?.to_owned();
    let own = SigningKey::random(&mut rand::rngs::OsRng);
    let pem = VerifyingKey::from(&own).to_public_key_pem(LineEnding::LF)?;
    let imported = server.post("/v1/public-keys", json!({"publicKeyMaterial": pem})).await?;
    let kid = imported["publicKey"]["id"].as_str().ok_or_else(|| anyhow::anyhow!("no key id"))?.to_owned();
    let header = json!({"alg": "ES384", "typ": "JWT", "kid": kid});
    let mut good = serde_json::to_value(claims(&stage_id, now() + 600))?;
    good["jti"] = json!("self-signed-rules");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut payload = good.clone();
        change(&mut payload);
        sign_json(&own, &header, &payload)
    };
    assert_eq!(code(state.authorize(&with(&|_| {})?, Capability::Join)), "OK");

    // Attributes: minting caps them at 1 KB, and so does verifying.
    let at_cap = with(&|p| p["attributes"] = json!({"k": "v".repeat(1023)}))?;
    assert_eq!(code(state.authorize(&at_cap, Capability::Join)), "OK");
    let over = with(&|p| p["attributes"] = json!({"k": "v".repeat(1024)}))?;
    let err = state.authorize(&over, Capability::Join).err().ok_or_else(|| anyhow::anyhow!("allowed"))?;
    assert_eq!((err.status.as_u16(), err.code), (401, "TOKEN_INVALID"));
    assert!(err.message.contains("attributes"), "{}", err.message);

    // nbf (not before) is honoured when present.
    let early = with(&|p| p["nbf"] = json!(now() + 120))?;
    let err = state.authorize(&early, Capability::Join).err().ok_or_else(|| anyhow::anyhow!("allowed"))?;
    assert_eq!((err.status.as_u16(), err.code), (401, "TOKEN_NOT_YET_VALID"));
    assert_eq!(code(state.authorize(&with(&|p| p["nbf"] = json!(now() - 5))?, Capability::Join)), "OK");
    assert_eq!(code(state.authorize(&with(&|p| p["nbf"] = json!("soon"))?, Capability::Join)), "TOKEN_MALFORMED");

    // A token must name its participant and its stage.
    for (field, value) in [("jti", ""), ("jti", "  "), ("topic", "")] {
        let t = with(&|p| p[field] = json!(value))?;
        let err = state.authorize(&t, Capability::Join).err().ok_or_else(|| anyhow::anyhow!("{field} {value:?}"))?;
        assert_eq!((err.status.as_u16(), err.code), (401, "TOKEN_INVALID"), "{field} {value:?}");
        assert!(err.message.contains(field), "{}", err.message);
    }

    // What a client sees: the event plane refuses them before upgrading.
    let refused = server.ws_try_connect(common::EVENTS_PATH, Some(&early)).await?;
    let (status, body) = refused.err().ok_or_else(|| anyhow::anyhow!("the upgrade was accepted"))?;
    assert_eq!((status, body["code"].as_str()), (401, Some("TOKEN_NOT_YET_VALID")));
    let refused = server.ws_try_connect(common::EVENTS_PATH, Some(&over)).await?;
    let (status, body) = refused.err().ok_or_else(|| anyhow::anyhow!("the upgrade was accepted"))?;
    assert_eq!((status, body["code"].as_str()), (401, Some("TOKEN_INVALID")));
    server.stop()
}
