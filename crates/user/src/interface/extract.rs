//! Authentication as extractors: handlers name what they need and get a checked principal.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use maas_shared::audit::ActionContext;
use maas_shared::http::{ApiError, OpenAi, Problem, RequestId};

use crate::app::auth::{Authenticator, Credential};
use crate::app::quotas::QuotaService;
use crate::domain::errors::IdentityError;
use crate::domain::principal::Principal;
use crate::domain::values::Permission;

/// Converts an identity error into the error format of the request's API.
#[must_use]
pub fn reject(req: &HttpRequest, err: IdentityError) -> actix_web::Error {
    if req.path() == "/v1" || req.path().starts_with("/v1/") {
        ApiError::<OpenAi>::from(err).into()
    } else {
        ApiError::<Problem>::from(err).into()
    }
}

fn credential(req: &HttpRequest) -> Result<(String, bool), IdentityError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| IdentityError::InvalidToken)?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or(IdentityError::InvalidToken)?;
        return Ok((token.trim().to_owned(), false));
    }
    if let Some(value) = req.headers().get("x-api-key") {
        let key = value.to_str().map_err(|_| IdentityError::InvalidToken)?;
        return Ok((key.trim().to_owned(), true));
    }
    Err(IdentityError::MissingCredentials)
}

/// The authenticator, as app data.
pub type AuthData = web::Data<Arc<dyn Authenticator>>;

/// Authenticates the request (no request counting). The gateway uses this and reserves tokens
/// itself; management handlers use [`Caller`]. App keys are refused here: they reach only their
/// app's endpoint, through [`AppKeyCaller`].
#[derive(Clone, Debug)]
pub struct Authenticated(pub Arc<Principal>);

impl FromRequest for Authenticated {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let any = AnyCredential::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let AnyCredential(principal) = any.await?;
            if principal.app().is_some() {
                return Err(reject(&req, IdentityError::AppKeyElsewhere));
            }
            Ok(Self(principal))
        })
    }
}

/// The caller of an app's endpoint: one of the app's keys, never a login token or an ordinary
/// key (the app's id is [`Principal::app`]; the handler compares it with the path's).
#[derive(Clone, Debug)]
pub struct AppKeyCaller(pub Arc<Principal>);

impl FromRequest for AppKeyCaller {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let any = AnyCredential::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let AnyCredential(principal) = any.await?;
            if principal.app().is_none() {
                return Err(reject(&req, IdentityError::AppKeyRequired));
            }
            Ok(Self(principal))
        })
    }
}

/// Any valid credential, app keys included (cached per request).
#[derive(Clone, Debug)]
struct AnyCredential(Arc<Principal>);

impl FromRequest for AnyCredential {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            if let Some(done) = req.extensions().get::<Self>() {
                return Ok(done.clone());
            }
            let auth = req.app_data::<AuthData>().cloned().ok_or_else(|| {
                reject(
                    &req,
                    IdentityError::Unexpected(anyhow::anyhow!("authenticator not configured")),
                )
            })?;
            let (presented, is_header_key) = credential(&req).map_err(|e| reject(&req, e))?;
            let credential = if is_header_key {
                Credential::ApiKey(&presented)
            } else {
                Credential::Bearer(&presented)
            };
            let principal = auth
                .authenticate(credential)
                .await
                .map_err(|e| reject(&req, e))?;
            let done = Self(principal);
            req.extensions_mut().insert(done.clone());
            Ok(done)
        })
    }
}

/// An authenticated caller of the management API. Calls made with an API key count against
/// the key's and the user's request limits and quotas (429 when spent).
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<Principal>);

impl Caller {
    /// The principal.
    #[must_use]
    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let authenticated = Authenticated::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let Authenticated(principal) = authenticated.await?;
            if principal.is_key() {
                let quotas = req
                    .app_data::<web::Data<QuotaService>>()
                    .cloned()
                    .ok_or_else(|| {
                        reject(
                            &req,
                            IdentityError::Unexpected(anyhow::anyhow!("quotas not configured")),
                        )
                    })?;
                quotas
                    .admit_request(&principal)
                    .await
                    .map_err(|e| reject(&req, e))?;
            }
            Ok(Self(principal))
        })
    }
}

/// Names a permission at the type level, for [`Authorized`].
pub trait PermissionMarker {
    /// The permission.
    const PERMISSION: Permission;
}

macro_rules! markers {
    ($($name:ident => $perm:ident),* $(,)?) => {$(
        #[doc = concat!("Requires `", stringify!($perm), "`.")]
        #[derive(Debug)]
        pub enum $name {}
        impl PermissionMarker for $name {
            const PERMISSION: Permission = Permission::$perm;
        }
    )*};
}

markers!(ManageUsers => ManageUsers, ManageQuotas => ManageQuotas, ManageOwnKeys => ManageOwnKeys, ViewAudit => ViewAudit);

/// A [`Caller`] that has permission `P` (else 403 `forbidden`).
#[derive(Debug)]
pub struct Authorized<P: PermissionMarker>(pub Arc<Principal>, PhantomData<P>);

impl<P: PermissionMarker> Authorized<P> {
    /// The principal.
    #[must_use]
    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

impl<P: PermissionMarker + 'static> FromRequest for Authorized<P> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let Caller(principal) = caller.await?;
            principal
                .require(P::PERMISSION)
                .map_err(|e| reject(&req, e))?;
            Ok(Self(principal, PhantomData))
        })
    }
}

/// Audit context of a request: request id and client address.
#[must_use]
pub fn action_context(req: &HttpRequest) -> ActionContext {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned());
    ActionContext {
        actor: None,
        request_id,
        ip: req.peer_addr().map(|a| a.ip().to_string()),
    }
}
