//! Verify's answer, rendered once per parse of the user: the service hands
//! out the same `Arc<User>` while the cached record is unchanged, so the
//! body and the `X-User-*` values it gives are the same too. Serialising
//! the user was a measurable share of verify beyond `/health/live`.

use std::sync::{Arc, LazyLock};

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;

use super::dto::{UserResponse, VerifyResponse};
use crate::auth::User;
use crate::memo::Memo;

/// Users whose answer is kept at most; emptied when full.
const KEPT: usize = 8192;

/// What verify answers for one user.
#[derive(Clone)]
pub struct Rendered {
    pub body: Bytes,
    pub id: HeaderValue,
    /// `None` for an address a header cannot carry.
    pub email: Option<HeaderValue>,
}

/// Each kept answer holds the `Arc` it was rendered from, so an equal
/// pointer is that same parse (the allocation cannot be reused meanwhile).
static KEPT_ANSWERS: LazyLock<Memo<i32, (Arc<User>, Rendered)>> = LazyLock::new(|| Memo::new(KEPT));

fn render(user: &User) -> Rendered {
    let body = serde_json::to_vec(&VerifyResponse {
        valid: true,
        user: UserResponse::from(user),
    })
    .expect("a user always serialises");
    Rendered {
        body: body.into(),
        id: HeaderValue::from(user.id),
        email: HeaderValue::from_str(&user.email).ok(),
    }
}

/// The answer for `user`: kept from an earlier request with the same parse,
/// else rendered now.
pub fn verify_answer(user: &Arc<User>) -> Rendered {
    if let Some((_, answer)) = KEPT_ANSWERS.get(&user.id, |(held, _)| Arc::ptr_eq(held, user)) {
        return answer;
    }
    let answer = render(user);
    KEPT_ANSWERS.keep(user.id, (Arc::clone(user), answer.clone()));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn user(email: &str) -> Arc<User> {
        let at = chrono::NaiveDate::from_ymd_opt(2024, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap();
        Arc::new(User {
            id: 41,
            email: email.into(),
            first_name: Some("Ada".into()),
            last_name: None,
            is_active: true,
            role: Role::Admin,
            created_at: at,
            updated_at: at,
            email_verified: true,
            meta_data: serde_json::json!({"team": "a"}),
        })
    }

    #[test]
    fn an_answer_is_reused_only_for_the_same_parse() {
        let first = user("a@example.com");
        let a = verify_answer(&first);
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(body["valid"], true);
        assert_eq!(body["user"]["email"], "a@example.com");
        assert_eq!(body["user"]["role"], "admin");
        assert_eq!(body["user"]["created_at"], "2024-01-02T03:04:05Z");
        assert_eq!(body["user"]["meta_data"]["team"], "a");
        assert_eq!(
            (
                a.id.to_str().unwrap(),
                a.email.as_ref().unwrap().to_str().unwrap()
            ),
            ("41", "a@example.com")
        );
        // The same parse: the very same bytes.
        assert_eq!(verify_answer(&first).body.as_ptr(), a.body.as_ptr());
        // Another parse of the user (a changed record): rendered afresh.
        let changed = user("b@example.com");
        let b = verify_answer(&changed);
        let body: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
        assert_eq!(body["user"]["email"], "b@example.com");
        assert_eq!(b.email.unwrap().to_str().unwrap(), "b@example.com");
    }
}
