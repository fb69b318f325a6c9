//! Participant and chat tokens (ES384 JWTs) from anyone: arbitrary strings,
//! real tokens flipped, cut, spliced and re-encoded never panic the
//! verifier and are never accepted unless untouched; every claim set the
//! server mints verifies back to itself.
//! `cargo xtask fuzz fuzz_tokens --seconds N` runs the properties longer.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p384::ecdsa::SigningKey;
use proptest::prelude::*;
use stagecast_protocol::token::{ParticipantClaims, TokenCapabilities};
use stagecast_server::auth::KeyRing;
use stagecast_server::chat::token::{ChatCapability, ChatClaims, ChatSigner};
use stagecast_server::store::SqliteStore;
use stagecast_testkit::{check, ensure, proptest};

mod common;

const NOW: i64 = 1_800_000_000;

fn claims(user: String, attributes: BTreeMap<String, String>, exp: i64) -> ParticipantClaims {
    ParticipantClaims {
        topic: "st-1".to_owned(),
        jti: "p-1".to_owned(),
        user_id: user,
        attributes,
        capabilities: TokenCapabilities { allow_publish: true, allow_subscribe: false },
        exp,
        iat: NOW,
        events_url: "ws://127.0.0.1:8080/v1/stage/events".to_owned(),
        whip_url: "http://127.0.0.1:8080/v1/stage/whip".to_owned(),
        version: "1.0".to_owned(),
    }
}

fn keyring() -> (KeyRing, std::path::PathBuf) {
    let dir = common::temp_dir("fuzz-tokens").expect("invariant: a temp dir");
    let store = SqliteStore::open(&dir.join("db.sqlite")).expect("invariant: a fresh database opens");
    (KeyRing::load_or_create(&dir, &store).expect("invariant: a fresh key ring"), dir)
}

/// Edits a token the way a forger would: characters flipped, parts cut,
/// dots added, one part swapped for a re-encoded variant.
#[derive(Debug, Clone)]
enum Edit {
    Flip(prop::sample::Index, char),
    Cut(prop::sample::Index),
    Insert(prop::sample::Index, char),
    /// Replace part `n` with base64url of these bytes.
    Part(usize, Vec<u8>),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let c = prop_oneof![Just('.'), Just('='), Just('A'), Just('_'), Just('-'), Just('é'), any::<char>()];
    let json_bytes = prop_oneof![
        Just(br#"{"alg":"none"}"#.to_vec()),
        Just(br#"{"alg":"ES384","kid":"stagecast-chat"}"#.to_vec()),
        Just(br#"{"alg":"ES384","kid":"x"}"#.to_vec()),
        Just(br#"{"topic":"st-1","jti":"p","capabilities":{},"exp":9223372036854775807,"events_url":"e","whip_url":"w"}"#.to_vec()),
        prop::collection::vec(any::<u8>(), 0..120),
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), c.clone()).prop_map(|(i, c)| Edit::Flip(i, c)),
        any::<prop::sample::Index>().prop_map(Edit::Cut),
        (any::<prop::sample::Index>(), c).prop_map(|(i, c)| Edit::Insert(i, c)),
        (0usize..3, json_bytes).prop_map(|(n, b)| Edit::Part(n, b)),
    ]
}

fn apply(token: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    for edit in edits {
        match edit {
            Edit::Flip(i, c) if !chars.is_empty() => {
                let at = i.index(chars.len());
                chars[at] = *c;
            }
            Edit::Cut(i) => chars.truncate(i.index(chars.len() + 1)),
            Edit::Insert(i, c) => chars.insert(i.index(chars.len() + 1), *c),
            Edit::Part(n, bytes) => {
                let text: String = chars.iter().collect();
                let mut parts: Vec<String> = text.split('.').map(str::to_owned).collect();
                if let Some(part) = parts.get_mut(*n) {
                    *part = URL_SAFE_NO_PAD.encode(bytes);
                }
                chars = parts.join(".").chars().collect();
            }
            Edit::Flip(..) => {}
        }
    }
    chars.into_iter().collect()
}

fn attributes() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-z]{1,8}", any::<String>().prop_map(|s| s.chars().take(40).collect()), 0..6)
}

#[test]
fn participant_tokens_round_trip_and_forgeries_fail_cleanly() {
    let (ring, dir) = keyring();
    let exp = prop_oneof![Just(i64::MAX), NOW + 1..NOW + 100_000_000];
    check("participant token round trip", 48, (any::<String>(), attributes(), exp), |(user, attrs, exp)| {
        let c = claims(user, attrs, exp);
        let Ok(token) = ring.mint(&c) else {
            // Only attributes over the size cap are refused at mint.
            return ensure(c.attributes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > 1024, || "mint refused".to_owned());
        };
        let back = ring.verify(&token, NOW).map_err(|e| TestCaseError::fail(e.to_string()))?;
        ensure(back == c, || format!("verified {back:?}"))
    });
    let token = ring.mint(&claims("ada".to_owned(), BTreeMap::new(), NOW + 60)).expect("invariant: mint");
    check("participant token edits", 256, prop::collection::vec(edit_strategy(), 1..4), |edits| {
        let forged = apply(&token, &edits);
        match ring.verify(&forged, NOW) {
            Ok(_) => ensure(forged.trim() == token, || format!("accepted a changed token: {forged}")),
            Err(e) => ensure(!e.to_string().contains("0x"), || format!("error text {e}")),
        }
    });
    check("participant token arbitrary", 1024, any::<String>(), |text| {
        ensure(ring.verify(&text, NOW).is_err(), || "accepted noise".to_owned())
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn chat_tokens_round_trip_and_forgeries_fail_cleanly() {
    let signer = ChatSigner::new(SigningKey::from_slice(&[7u8; 48]).expect("invariant: a valid scalar"));
    let caps = prop::collection::vec(
        prop_oneof![Just(ChatCapability::SendMessage), Just(ChatCapability::DeleteMessage), Just(ChatCapability::DisconnectUser)],
        0..3,
    );
    check("chat token round trip", 48, (any::<String>(), attributes(), caps), |(user, attrs, caps)| {
        let c = ChatClaims::new("room-1".to_owned(), user, attrs, caps, NOW, NOW + 60, "j".to_owned());
        let token = signer.mint(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = signer.verify(&token, NOW).map_err(|e| TestCaseError::fail(e.to_string()))?;
        ensure(back == c, || format!("verified {back:?}"))
    });
    let c = ChatClaims::new("room-1".to_owned(), "bob".to_owned(), BTreeMap::new(), Vec::new(), NOW, NOW + 60, "j".to_owned());
    let token = signer.mint(&c).expect("invariant: mint");
    check("chat token edits", 256, prop::collection::vec(edit_strategy(), 1..4), |edits| {
        let forged = apply(&token, &edits);
        match signer.verify(&forged, NOW) {
            Ok(_) => ensure(forged.trim() == token, || format!("accepted a changed token: {forged}")),
            Err(_) => Ok(()),
        }
    });
    check("chat token arbitrary", 1024, any::<String>(), |text| {
        ensure(signer.verify(&text, NOW).is_err(), || "accepted noise".to_owned())
    });
}
