//! Bearer-token authentication and role checks.
//!
//! A handler states who may call it in its signature: `_: Authorized<AuditorOnly>`. The
//! extractor runs before the body is read, so an unauthenticated or unauthorised request
//! is refused (401, 403) before anything about it is parsed.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::tokens::Role;

/// Which roles an endpoint admits.
pub trait Policy: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Proof that the caller presented a valid token of a role that `P` admits.
#[derive(Debug)]
pub struct Authorized<P: Policy> {
    pub role: Role,
    policy: PhantomData<P>,
}

macro_rules! policy {
    ($(#[$doc:meta])* $name:ident => [$($role:ident),+]) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl Policy for $name {
            const ROLES: &'static [Role] = &[$(Role::$role),+];
        }
    };
}

policy!(
    /// The billing service's commands and balance reads.
    BillingOnly => [Billing]
);
policy!(
    /// The event log and verification: auditors.
    AuditorOnly => [Auditor]
);
policy!(
    /// Payout runs.
    FinanceOnly => [Finance]
);
policy!(
    /// Reports: finance and auditors.
    FinanceOrAuditor => [Finance, Auditor]
);
policy!(
    /// An affiliate's commissions: the billing service and finance.
    BillingOrFinance => [Billing, Finance]
);
policy!(
    /// Erasure, export, restriction and personal data.
    PrivacyOnly => [Privacy]
);
policy!(
    /// Commission plans.
    AdminOnly => [Admin]
);

impl<P: Policy> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let role = authenticate(parts, state)?;
        if !P::ROLES.contains(&role) {
            let allowed: Vec<&str> = P::ROLES.iter().map(|role| role.as_str()).collect();
            return Err(ApiError::Forbidden {
                role: role.as_str(),
                allowed: allowed.join(", "),
            });
        }
        Ok(Authorized {
            role,
            policy: PhantomData,
        })
    }
}

/// The role of the request's bearer token.
fn authenticate(parts: &Parts, state: &AppState) -> Result<Role, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized)?;
    let value = header.as_bytes();
    // The scheme is case-insensitive (RFC 9110, 11.1).
    let scheme_length = "Bearer ".len();
    if value.len() <= scheme_length || !value[..scheme_length].eq_ignore_ascii_case(b"bearer ") {
        return Err(ApiError::Unauthorized);
    }
    let secret = value[scheme_length..].trim_ascii();
    state.tokens.role_of(secret).ok_or(ApiError::Unauthorized)
}
