//! `GET /report/workflows/{namespace}/{name}`, `/report/policies/{namespace}/{name}` and
//! `/report/clusterpolicies/{name}`: the HTML pages of [`crate::page`].
//!
//! The port is reachable by every pod (the sensors report to it), and a page shows another
//! team's images and vulnerabilities, so a page is shown only to whoever may `get` the object
//! itself:
//! - a request from a loopback peer is allowed: that is `kubectl port-forward` to the operator
//!   pod, which already needs `pods/portforward` in the operator's namespace (unless the
//!   operator runs with `--report-pages-token-only`, which the chart sets with `hostNetwork`,
//!   where every process of the node shares the loopback);
//! - any other request needs `Authorization: Bearer <token>`: a TokenReview says whose it is
//!   (401 if no one's), and a SubjectAccessReview whether that user may `get` the resource
//!   (`whittle.dev` hardeningworkflows / hardeningpolicies / clusterhardeningpolicies, its
//!   namespace and name); 403 otherwise, naming the user and the permission.
//!
//! Authorization comes before the object is read, so the answer says nothing about which
//! objects exist to someone who may not see them.
//!
//! **I/O**: [`ApiReviewer`] and the handlers; **pure**: [`first_step`], [`reviewed_user`],
//! [`access_review`], [`access_decision`], and [`authorize`] given a [`Reviewer`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{
    TokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use super::ServerState;
use crate::api::HardeningWorkflow;
use crate::api::policy::{ClusterHardeningPolicy, HardeningPolicy};
use crate::page;

/// Longest bearer token read (a ServiceAccount token is about 1 KiB; OIDC ones a few).
const MAX_TOKEN: usize = 16 << 10;
/// Page requests reviewed at once; past it, 429. Apart from the report intake's slots, so a
/// flood of page requests never refuses a sensor's report.
pub const PAGES_IN_FLIGHT: usize = 4;

/// What a page is of, as RBAC names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `hardeningworkflows`, `hardeningpolicies` or `clusterhardeningpolicies`.
    pub resource: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl Target {
    /// `get hardeningworkflows.whittle.dev shop/web`: the permission a request needs.
    pub fn permission(&self) -> String {
        let object = match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        };
        format!("get {}.whittle.dev {object}", self.resource)
    }
}

/// Why a page is not shown.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no token, or one the API server does not accept.
    Unauthenticated(String),
    /// 403: a user who may not get the object.
    Forbidden(String),
    /// 503: the API server did not answer a review.
    Unavailable(String),
}

/// Asks the API server about tokens and permissions; a fake in tests.
pub trait Reviewer {
    fn token(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<TokenReviewStatus, kube::Error>> + Send;
    fn access(
        &self,
        review: SubjectAccessReview,
    ) -> impl Future<Output = Result<SubjectAccessReviewStatus, kube::Error>> + Send;
}

pub struct ApiReviewer<'a>(pub &'a Client);

impl Reviewer for ApiReviewer<'_> {
    async fn token(&self, token: &str) -> Result<TokenReviewStatus, kube::Error> {
        // No audiences: the API server's own, as `kubectl create token` makes them. A sensor's
        // token (audience `whittle`) is not accepted here.
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.0.clone())
            .create(&PostParams::default(), &review)
            .await?;
        Ok(answer.status.unwrap_or_default())
    }

    async fn access(
        &self,
        review: SubjectAccessReview,
    ) -> Result<SubjectAccessReviewStatus, kube::Error> {
        let answer = Api::<SubjectAccessReview>::all(self.0.clone())
            .create(&PostParams::default(), &review)
            .await?;
        Ok(answer.status.unwrap_or_default())
    }
}

/// The bearer token of `Authorization`, if any.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Before any review: `Ok(None)` lets a loopback peer in (when `trust_loopback`), `Ok(Some)`
/// is the token to review, and a request without one (or from an unknown peer without one)
/// is refused.
pub fn first_step(
    peer: Option<SocketAddr>,
    authorization: Option<&str>,
    trust_loopback: bool,
) -> Result<Option<&str>, Refusal> {
    if trust_loopback && peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) {
        return Ok(None);
    }
    match bearer(authorization) {
        Some(token) if token.len() <= MAX_TOKEN => Ok(Some(token)),
        Some(_) => Err(Refusal::Unauthenticated(
            "the bearer token is too long".into(),
        )),
        None => Err(Refusal::Unauthenticated(
            "a report page needs Authorization: Bearer <token> (e.g. kubectl create token), or a request through kubectl port-forward".into(),
        )),
    }
}

/// The user a reviewed token belongs to.
pub fn reviewed_user(status: &TokenReviewStatus) -> Result<UserInfo, Refusal> {
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("no reason given");
        return Err(Refusal::Unauthenticated(format!(
            "the bearer token was not accepted by the API server ({why})"
        )));
    }
    match &status.user {
        Some(user) if user.username.as_deref().is_some_and(|u| !u.is_empty()) => Ok(user.clone()),
        _ => Err(Refusal::Unauthenticated(
            "the bearer token names no user".into(),
        )),
    }
}

/// The SubjectAccessReview: may `user` get `target`?
pub fn access_review(user: &UserInfo, target: &Target) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("whittle.dev".into()),
                resource: Some(target.resource.into()),
                verb: Some("get".into()),
                namespace: target.namespace.clone(),
                name: Some(target.name.clone()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// Allowed, or 403 naming the user and the permission.
pub fn access_decision(
    user: &UserInfo,
    target: &Target,
    status: &SubjectAccessReviewStatus,
) -> Result<(), Refusal> {
    if status.allowed && status.denied != Some(true) {
        return Ok(());
    }
    let name = user.username.as_deref().unwrap_or_default();
    let why = status
        .reason
        .as_deref()
        .or(status.evaluation_error.as_deref())
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    Err(Refusal::Forbidden(format!(
        "user {name:?} may not {}{why}",
        target.permission()
    )))
}

/// The whole decision for one request.
pub async fn authorize(
    reviewer: &impl Reviewer,
    peer: Option<SocketAddr>,
    authorization: Option<&str>,
    trust_loopback: bool,
    target: &Target,
) -> Result<(), Refusal> {
    let Some(token) = first_step(peer, authorization, trust_loopback)? else {
        return Ok(());
    };
    let reviewed = reviewer
        .token(token)
        .await
        .map_err(|e| Refusal::Unavailable(format!("cannot review the bearer token: {e}")))?;
    let user = reviewed_user(&reviewed)?;
    let access = reviewer
        .access(access_review(&user, target))
        .await
        .map_err(|e| Refusal::Unavailable(format!("cannot review the permission: {e}")))?;
    access_decision(&user, target, &access)
}

/// A DNS subdomain (object names) or label (namespaces): what can name an object at all. Checked
/// before a name reaches a review or an API path.
fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

fn text(status: StatusCode, message: &str) -> Response {
    let mut r = (status, format!("{message}\n")).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn html(body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page::html::CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Checks the request, then renders what `read` finds.
async fn serve<F, Fut>(state: &ServerState, parts: &Parts, target: Target, read: F) -> Response
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<Option<String>, kube::Error>>,
{
    let id = match &target.namespace {
        Some(ns) => format!("{ns}/{}", target.name),
        None => target.name.clone(),
    };
    if !valid_name(&target.name, 253)
        || target
            .namespace
            .as_deref()
            .is_some_and(|ns| !valid_name(ns, 63) || ns.contains('.'))
    {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let decision = {
        let Ok(_slot) = state.page_slots.clone().try_acquire_owned() else {
            return text(
                StatusCode::TOO_MANY_REQUESTS,
                "too many report page requests at once; try again shortly",
            );
        };
        let reviewer = ApiReviewer(&state.client);
        authorize(
            &reviewer,
            peer,
            authorization,
            state.trust_loopback,
            &target,
        )
        .await
    };
    if let Err(refusal) = decision {
        tracing::info!(
            page = target.permission(),
            ?peer,
            "report page refused: {refusal:?}"
        );
        return match refusal {
            Refusal::Unauthenticated(m) => text(StatusCode::UNAUTHORIZED, &m),
            Refusal::Forbidden(m) => text(StatusCode::FORBIDDEN, &m),
            Refusal::Unavailable(m) => text(StatusCode::SERVICE_UNAVAILABLE, &m),
        };
    }
    match read(state.client.clone()).await {
        Ok(Some(body)) => html(body),
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            &format!("{} {id} not found", target.resource),
        ),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot read {} {id}: {e}", target.resource),
        ),
    }
}

pub(super) async fn workflow(
    State(state): State<ServerState>,
    Path((namespace, name)): Path<(String, String)>,
    parts: Parts,
) -> Response {
    let target = Target {
        resource: "hardeningworkflows",
        namespace: Some(namespace.clone()),
        name: name.clone(),
    };
    serve(&state, &parts, target, |client| async move {
        let api: Api<HardeningWorkflow> = Api::namespaced(client, &namespace);
        Ok(api.get_opt(&name).await?.map(|w| page::workflow(&w)))
    })
    .await
}

pub(super) async fn policy(
    State(state): State<ServerState>,
    Path((namespace, name)): Path<(String, String)>,
    parts: Parts,
) -> Response {
    let target = Target {
        resource: "hardeningpolicies",
        namespace: Some(namespace.clone()),
        name: name.clone(),
    };
    serve(&state, &parts, target, |client| async move {
        let api: Api<HardeningPolicy> = Api::namespaced(client, &namespace);
        Ok(api.get_opt(&name).await?.map(|p| {
            let status = p.status.clone().unwrap_or_default();
            page::policy(
                "HardeningPolicy",
                Some(&namespace),
                &p.name_any(),
                &p.spec,
                &status,
            )
        }))
    })
    .await
}

pub(super) async fn cluster_policy(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    parts: Parts,
) -> Response {
    let target = Target {
        resource: "clusterhardeningpolicies",
        namespace: None,
        name: name.clone(),
    };
    serve(&state, &parts, target, |client| async move {
        let api: Api<ClusterHardeningPolicy> = Api::all(client);
        Ok(api.get_opt(&name).await?.map(|p| {
            let status = p.status.clone().unwrap_or_default();
            page::policy(
                "ClusterHardeningPolicy",
                None,
                &p.name_any(),
                &p.spec.policy,
                &status,
            )
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers reviews from fixed results and records what it was asked.
    struct Fake {
        token: TokenReviewStatus,
        allowed: bool,
        asked: Mutex<Vec<String>>,
    }

    impl Reviewer for Fake {
        async fn token(&self, token: &str) -> Result<TokenReviewStatus, kube::Error> {
            self.asked.lock().unwrap().push(format!("token {token}"));
            Ok(self.token.clone())
        }
        async fn access(
            &self,
            review: SubjectAccessReview,
        ) -> Result<SubjectAccessReviewStatus, kube::Error> {
            let a = review.spec.resource_attributes.unwrap_or_default();
            self.asked.lock().unwrap().push(format!(
                "access {} {:?} {} {}/{} {} {}",
                review.spec.user.unwrap_or_default(),
                review.spec.groups.unwrap_or_default(),
                a.verb.unwrap_or_default(),
                a.namespace.unwrap_or_default(),
                a.name.unwrap_or_default(),
                a.resource.unwrap_or_default(),
                a.group.unwrap_or_default(),
            ));
            Ok(SubjectAccessReviewStatus {
                allowed: self.allowed,
                reason: (!self.allowed).then(|| "no RBAC policy matched".into()),
                ..Default::default()
            })
        }
    }

    fn alice() -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo {
                username: Some("alice".into()),
                groups: Some(vec!["shop-devs".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rejected() -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(false),
            error: Some("token has expired".into()),
            ..Default::default()
        }
    }

    fn target() -> Target {
        Target {
            resource: "hardeningworkflows",
            namespace: Some("shop".into()),
            name: "web".into(),
        }
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    async fn decide(
        peer: Option<SocketAddr>,
        header: Option<&str>,
        token: TokenReviewStatus,
        allowed: bool,
        trust_loopback: bool,
    ) -> (Result<(), Refusal>, Vec<String>) {
        let fake = Fake {
            token,
            allowed,
            asked: Mutex::new(Vec::new()),
        };
        let r = authorize(&fake, peer, header, trust_loopback, &target()).await;
        (r, fake.asked.into_inner().unwrap())
    }

    #[tokio::test]
    async fn a_loopback_peer_needs_no_token_and_no_review() {
        for p in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            let (r, asked) = decide(peer(p), None, rejected(), false, true).await;
            assert_eq!(r, Ok(()), "{p}");
            assert!(asked.is_empty(), "{p}: {asked:?}");
        }
    }

    #[tokio::test]
    async fn any_other_peer_needs_a_token() {
        for (p, trust) in [
            (peer("10.0.0.7:5000"), true),
            (None, true),
            (peer("127.0.0.1:5000"), false),
        ] {
            for header in [None, Some("Basic YWxpY2U6cHc="), Some("Bearer ")] {
                let (r, asked) = decide(p, header, alice(), true, trust).await;
                assert!(
                    matches!(r, Err(Refusal::Unauthenticated(_))),
                    "{p:?} {header:?}: {r:?}"
                );
                assert!(asked.is_empty());
            }
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN + 1));
        let (r, _) = decide(peer("10.0.0.7:1"), Some(&long), alice(), true, true).await;
        assert!(matches!(r, Err(Refusal::Unauthenticated(_))));
    }

    #[tokio::test]
    async fn a_token_the_api_server_rejects_is_401() {
        let (r, asked) = decide(
            peer("10.0.0.7:1"),
            Some("Bearer t0k"),
            rejected(),
            true,
            true,
        )
        .await;
        let Err(Refusal::Unauthenticated(m)) = r else {
            panic!("{r:?}")
        };
        assert!(m.contains("expired"), "{m}");
        assert_eq!(asked, ["token t0k"], "no access review for no one");
    }

    #[tokio::test]
    async fn the_users_permission_on_the_object_decides() {
        let (r, asked) = decide(peer("10.0.0.7:1"), Some("Bearer t0k"), alice(), true, true).await;
        assert_eq!(r, Ok(()));
        assert_eq!(
            asked,
            [
                "token t0k",
                r#"access alice ["shop-devs"] get shop/web hardeningworkflows whittle.dev"#
            ]
        );
        let (r, _) = decide(peer("10.0.0.7:1"), Some("bearer t0k"), alice(), false, true).await;
        let Err(Refusal::Forbidden(m)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            m,
            r#"user "alice" may not get hardeningworkflows.whittle.dev shop/web (no RBAC policy matched)"#
        );
    }

    #[test]
    fn an_explicit_deny_wins_and_the_cluster_policy_has_no_namespace() {
        let user = reviewed_user(&alice()).unwrap();
        let status = SubjectAccessReviewStatus {
            allowed: true,
            denied: Some(true),
            ..Default::default()
        };
        assert!(access_decision(&user, &target(), &status).is_err());
        let cluster = Target {
            resource: "clusterhardeningpolicies",
            namespace: None,
            name: "all".into(),
        };
        let review = access_review(&user, &cluster);
        let a = review.spec.resource_attributes.unwrap();
        assert_eq!((a.namespace, a.name.as_deref()), (None, Some("all")));
        assert_eq!(
            cluster.permission(),
            "get clusterhardeningpolicies.whittle.dev all"
        );
    }

    #[test]
    fn names_that_cannot_name_an_object_are_refused() {
        assert!(valid_name("web-1.v2", 253));
        for bad in ["", "..", "a/b", "Web", "-a", "a-", "a%2Fb", "a b"] {
            assert!(!valid_name(bad, 253), "{bad}");
        }
    }
}
