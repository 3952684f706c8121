//! Deeplinks (issue 19, item 8): a signed link to a payout awaiting approval opens its console
//! page once, after its user signs in as a member of the link's company; expired, replayed,
//! tampered and other-company links are refused, and a company's user sees nothing else in the
//! console.

use crate::console::{Session, with_console};
use crate::harness::*;
use crate::tenancy::{A_APPROVER, A_TRADER, B_TRADER, Tenants, payout_of, tenants_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

crate::on_both_backends!(a_link_opens_its_page_once_for_its_company);

async fn mint(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.post("/v1/deeplinks", token, None, &body).await
}

async fn link(app: &TestApp, token: &str, payout: &str) -> String {
    let (s, link) = mint(app, token, json!({"target": "payout", "id": payout})).await;
    assert_eq!(s, StatusCode::CREATED, "{link}");
    link["url"].as_str().unwrap().to_owned()
}

/// A fresh browser signed in with `token` (Approvers enrol their second factor on the way).
async fn signed_in(app: &TestApp, token: &str) -> (Session, String) {
    let mut s = Session::new(app);
    let csrf = s.sign_in(token).await;
    (s, csrf)
}

async fn a_link_opens_its_page_once_for_its_company(backend: Backend) {
    let Tenants {
        app,
        a_account,
        b_account,
        a_company,
        b_company,
    } = tenants_with(backend, with_console).await;
    // A payout over the threshold waits for an approver of A; B has one of its own.
    let (_, waiting) = payout_of(&app, A_TRADER, &a_account, "big", "150000").await;
    assert_eq!(waiting["state"], "pending_approval", "{waiting}");
    let payout = waiting["id"].as_str().unwrap().to_owned();
    let (_, theirs) = payout_of(&app, B_TRADER, &b_account, "theirs", "10").await;
    let b_payout = theirs["id"].as_str().unwrap().to_owned();

    // Minting: only for what the caller sees, for its own company, for at most 15 minutes.
    let (s, body) = mint(&app, A_TRADER, json!({"target": "payout", "id": b_payout})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = mint(
        &app,
        A_TRADER,
        json!({"target": "payout", "id": payout, "company": b_company}),
    )
    .await;
    assert_eq!(
        (s, &body["error"]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("company"))
    );
    let (s, body) = mint(
        &app,
        A_TRADER,
        json!({"target": "payout", "id": payout, "ttl_seconds": 901}),
    )
    .await;
    assert_eq!(
        (s, &body["error"]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("ttl_seconds"))
    );
    let (s, minted) = mint(&app, A_TRADER, json!({"target": "payout", "id": payout})).await;
    assert_eq!(s, StatusCode::CREATED, "{minted}");
    assert_eq!(minted["company"], a_company.as_str(), "{minted}");
    let url = minted["url"].as_str().unwrap().to_owned();

    // Signed out: the link waits while its user signs in, then opens its page, once.
    let mut browser = Session::new(&app);
    let (s, _, to) = browser.get(&url).await;
    assert_eq!(
        (s, to.as_deref()),
        (StatusCode::SEE_OTHER, Some("/admin/login"))
    );
    let (_, form, _) = browser.get("/admin/login").await;
    let nonce = Session::hidden(&form, "login_csrf");
    let (s, _, to) = browser
        .post(
            "/admin/login",
            &[("login_csrf", &nonce), ("token", A_TRADER)],
        )
        .await;
    // A's policy (the default) asks its traders for a second factor too: they enrol first,
    // and the enrolment page leads back to the link.
    assert_eq!(
        (s, to.as_deref()),
        (StatusCode::SEE_OTHER, Some("/admin/2fa/enrol"))
    );
    let (_, enrol, _) = browser.get("/admin/2fa/enrol").await;
    let code = crate::console::code_now(&crate::console::secret_of(&enrol), 0);
    let csrf = Session::hidden(&enrol, "csrf");
    let (s, done, _) = browser
        .post("/admin/2fa/enrol", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert!(done.contains(&format!("href=\"{url}\"")), "{done}");
    let (s, _, to) = browser.get(&url).await;
    let page = format!("/admin/payouts/{payout}");
    assert_eq!(
        (s, to.as_deref()),
        (StatusCode::SEE_OTHER, Some(page.as_str()))
    );
    let (s, html, _) = browser.get(&page).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("pending_approval"), "{html}");
    // Replayed: refused.
    let (s, html, _) = browser.get(&url).await;
    assert_eq!(s, StatusCode::GONE, "{html}");
    assert!(html.contains("used already"), "{html}");
    // A company's user sees nothing else here: not the staff pages, not B's payout.
    let (s, _, _) = browser.get("/admin/treasury").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = browser.get(&format!("/admin/payouts/{b_payout}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Another company's user is refused, and the link stays good for its own company: A's
    // approver opens it and approves from the page.
    let url = link(&app, A_TRADER, &payout).await;
    let (mut b_browser, _) = signed_in(&app, B_TRADER).await;
    let (s, html, _) = b_browser.get(&url).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{html}");
    let (mut approver, csrf) = signed_in(&app, A_APPROVER).await;
    let (s, _, to) = approver.get(&url).await;
    assert_eq!(
        (s, to.as_deref()),
        (StatusCode::SEE_OTHER, Some(page.as_str()))
    );
    let (s, _, _) = approver
        .post(
            &format!("{page}/approve"),
            &[("csrf", &csrf), ("reason", "checked")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, now) = app.get(&format!("/v1/payouts/{payout}"), A_TRADER).await;
    assert_ne!(now["state"], "pending_approval", "{now}");

    // Tampered: one character of the claims changed.
    let url = link(&app, A_TRADER, &payout).await;
    let (head, rest) = url.split_once('.').unwrap();
    let flipped = if rest.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{head}.{flipped}{}", &rest[1..]);
    let (s, html, _) = browser.get(&tampered).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{html}");
    // The untampered one still opens.
    let (s, _, _) = browser.get(&url).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    // Expired: a one-second link, opened later.
    let (_, short) = mint(
        &app,
        A_TRADER,
        json!({"target": "payout", "id": payout, "ttl_seconds": 1}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (s, html, _) = browser.get(short["url"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::GONE, "{html}");
    assert!(html.contains("expired"), "{html}");
    // A staff link is not for a company's user.
    let staff = link(&app, ADMIN, &payout).await;
    let (s, _, _) = browser.get(&staff).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Each mint and each opening is audited.
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let count = |action: &str| {
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == action)
            .count()
    };
    assert_eq!(
        (count("deeplink.create"), count("deeplink.open")),
        (5, 3),
        "{audit}"
    );
    app.stop().await.unwrap();
}

crate::on_both_backends!(a_company_policy_decides_its_traders_second_factor);

/// A company's users need a second factor in the console by default whatever their role; an
/// Admin may lift that for a company (audited), after which its traders sign in with the
/// token alone. Its admins and approvers always need one.
async fn a_company_policy_decides_its_traders_second_factor(backend: Backend) {
    let Tenants { app, b_company, .. } = tenants_with(backend, with_console).await;
    let sign_in = |token: &'static str| {
        let app = &app;
        async move {
            let mut s = Session::new(app);
            let (_, form, _) = s.get("/admin/login").await;
            let nonce = Session::hidden(&form, "login_csrf");
            s.post("/admin/login", &[("login_csrf", &nonce), ("token", token)])
                .await
                .2
        }
    };
    assert_eq!(sign_in(B_TRADER).await.as_deref(), Some("/admin/2fa/enrol"));
    let (s, company) = app
        .post(
            &format!("/v1/companies/{b_company}/second-factor"),
            ADMIN,
            None,
            &json!({"required": false, "reason": "pilot desk on a shared terminal"}),
        )
        .await;
    assert_eq!(
        (s, &company["second_factor"]),
        (StatusCode::OK, &json!(false)),
        "{company}"
    );
    assert_eq!(sign_in(B_TRADER).await.as_deref(), Some("/admin"));
    assert_eq!(
        sign_in(A_APPROVER).await.as_deref(),
        Some("/admin/2fa/enrol")
    );
    let (s, _) = app
        .post(
            &format!("/v1/companies/{b_company}/second-factor"),
            crate::tenancy::A_ADMIN,
            None,
            &json!({"required": false, "reason": "not theirs"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    app.stop().await.unwrap();
}
