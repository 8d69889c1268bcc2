//! Staging protection against the real binary: basic auth with an argon2id
//! hash made by `bext hash-password`, token auth by header, bearer and the
//! `?bext_token=` visit cookie, websocket upgrades and long-poll checked too,
//! exempt paths, failures counted and the rate limiter in front.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{client, Bext, StubOrigin, BEXT};
use crate::scrape::{parse, scrape, value_or_zero};
use crate::support::one_node;

fn hash_password(password: &str) -> String {
    let mut child = Command::new(BEXT)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

const LIVE: &str =
    "[[route_rules]]\npattern = \"/live/*\"\nproxy = \"phoenix\"\nwebsocket = true\n";

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

/// The status of a websocket handshake to `path` with `headers`.
async fn ws_status(bext: &Bext, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = format!("ws://{}{path}", bext.addr())
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, http::HeaderValue::from_str(v).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("websocket handshake: {e}"),
    }
}

#[tokio::test]
async fn basic_auth_guards_pages_websockets_and_long_poll_with_hashed_passwords() {
    let origin = StubOrigin::start("n0").await;
    let hash = hash_password("correct horse");
    let sites = format!(
        "[sites.\"*\"]\nauth = {{ basic = [\"alice:{hash}\"], realm = \"Staging\", exempt = [\"/health\"] }}\n\
         [limits]\nrate = {{ requests = 40, per = \"1m\", burst = 40 }}\n"
    );
    let bext = Bext::start(&one_node(origin.addr(), LIVE, &sites)).await;
    let c = client();

    let r = c.get(bext.url("/page")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"Staging\", charset=\"UTF-8\""
    );
    let wrong = c
        .get(bext.url("/page"))
        .header("authorization", basic("alice:battery staple"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let good = basic("alice:correct horse");
    for _ in 0..3 {
        let r = c
            .get(bext.url("/page"))
            .header("authorization", &good)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        origin.requests_to("/page").len(),
        3,
        "only the authorized requests reached Phoenix"
    );
    // Exempt paths need no login.
    let health = c.get(bext.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // A websocket upgrade and a LiveView long-poll are checked like any request.
    assert_eq!(ws_status(&bext, "/live/websocket", &[]).await, 401);
    assert_eq!(
        ws_status(&bext, "/live/websocket", &[("authorization", &good)]).await,
        101
    );
    assert_eq!(origin.ws_sessions(), 1);
    let poll = c
        .post(bext.url("/live/longpoll?vsn=2.0.0"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 401);

    // Brute force from another address: each failure is counted, and the
    // rate limiter (per client address) runs first.
    let attacker = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut statuses = vec![];
    for i in 0..45 {
        let r = attacker
            .get(bext.url("/login-try"))
            .header("authorization", basic(&format!("alice:guess{i}")))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let denied = statuses.iter().filter(|s| **s == 401).count() as f64;
    let samples = parse(&scrape(&c, &format!("http://{}", bext.addr())).await);
    let counted = value_or_zero(
        &samples,
        "bext_auth_requests_total",
        &[("result", "denied")],
    );
    // The one wrong password above, the brute force's 401s.
    assert_eq!(counted, denied + 1.0, "{statuses:?}");
    assert!(value_or_zero(&samples, "bext_auth_requests_total", &[("result", "pass")]) >= 4.0);
}

#[tokio::test]
async fn token_auth_by_header_bearer_and_a_visit_cookie_that_websockets_carry() {
    let origin = StubOrigin::start("n0").await;
    let token = "staging-token-0123456789";
    let auth = format!("auth = {{ token = \"{token}\", header = \"X-Staging-Token\" }}\n");
    let routes = format!(
        "{LIVE}{auth}[[route_rules]]\npattern = \"/app/*\"\nproxy = \"phoenix\"\ncache = false\n{auth}"
    );
    let bext = Bext::start(&one_node(origin.addr(), &routes, "")).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = c.get(bext.url("/app/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"bext\"");
    let by_header = c
        .get(bext.url("/app/x"))
        .header("x-staging-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let seen = origin.requests_to("/app/x");
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0].has_header("x-staging-token"),
        "the token stays at the edge"
    );
    let by_bearer = c
        .get(bext.url("/app/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_bearer.status(), 200);
    let wrong = c
        .get(bext.url("/app/x"))
        .header("x-staging-token", "staging-token-0123456788")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // A browser visits once with the token in the URL...
    let visit = c
        .get(bext.url(&format!("/app/page?tab=2&bext_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(visit.status(), 303);
    assert_eq!(visit.headers()["location"], "/app/page?tab=2");
    let set_cookie = visit.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(
        origin.requests_to("/app/page").is_empty(),
        "the token never reaches Phoenix"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // ...then its page, and its LiveView websocket, carry only the cookie.
    let page = c
        .get(bext.url("/app/page?tab=2"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(ws_status(&bext, "/live/websocket", &[]).await, 401);
    assert_eq!(
        ws_status(&bext, "/live/websocket", &[("cookie", &cookie)]).await,
        101
    );
    // A forged cookie is refused.
    let forged = format!("{}x", cookie);
    let r = c
        .get(bext.url("/app/page"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The unprotected catch-all route stays open.
    let open = c.get(bext.url("/public")).send().await.unwrap();
    assert_eq!(open.status(), 200);
}

#[tokio::test]
async fn plain_passwords_are_refused_by_the_config_check() {
    let origin = StubOrigin::start("n0").await;
    let toml = one_node(
        origin.addr(),
        "",
        "[sites.\"*\"]\nauth = { basic = [\"alice:hunter2\"] }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bext.toml");
    std::fs::write(&path, toml).unwrap();
    let out = crate::common::run_bext(&["check", "-c", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("sites.\"*\".auth.basic") && text.contains("bext hash-password"),
        "{text}"
    );
}
