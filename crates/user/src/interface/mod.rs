//! The identity HTTP API (under `/api/v1`), its extractors and its OpenAPI document.

pub mod audit;
pub mod dto;
pub mod extract;
pub mod handlers;

use actix_web::web;

/// The OpenAPI document of the identity context.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        handlers::login, handlers::refresh, handlers::logout, handlers::register,
        handlers::me, handlers::change_password, handlers::my_quota,
        handlers::list_my_keys, handlers::create_my_key, handlers::revoke_my_key, handlers::rotate_my_key,
        handlers::list_users, handlers::create_user, handlers::get_user, handlers::delete_user,
        handlers::disable_user, handlers::enable_user, handlers::set_roles,
        handlers::get_user_quota, handlers::set_user_quota,
        handlers::list_user_keys, handlers::create_user_key, handlers::revoke_user_key, handlers::set_key_quota,
        audit::list_audit,
    ),
    tags(
        (name = "auth", description = "Login, token refresh, logout, registration"),
        (name = "me", description = "The caller's account, API keys and quotas"),
        (name = "users", description = "User administration: accounts, roles, keys, quotas (admin)"),
    )
)]
pub struct UserApi;

/// Registers the identity routes (as resources, so a wrong method is a 405).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use handlers as h;
    cfg.service(web::resource("/auth/login").route(web::post().to(h::login)))
        .service(web::resource("/auth/refresh").route(web::post().to(h::refresh)))
        .service(web::resource("/auth/logout").route(web::post().to(h::logout)))
        .service(web::resource("/auth/register").route(web::post().to(h::register)))
        .service(web::resource("/me").route(web::get().to(h::me)))
        .service(web::resource("/me/password").route(web::post().to(h::change_password)))
        .service(web::resource("/me/quota").route(web::get().to(h::my_quota)))
        .service(
            web::resource("/me/keys")
                .route(web::get().to(h::list_my_keys))
                .route(web::post().to(h::create_my_key)),
        )
        .service(web::resource("/me/keys/{key_id}").route(web::delete().to(h::revoke_my_key)))
        .service(web::resource("/me/keys/{key_id}/rotate").route(web::post().to(h::rotate_my_key)))
        .service(
            web::resource("/users")
                .route(web::get().to(h::list_users))
                .route(web::post().to(h::create_user)),
        )
        .service(
            web::resource("/users/{user_id}")
                .route(web::get().to(h::get_user))
                .route(web::delete().to(h::delete_user)),
        )
        .service(web::resource("/users/{user_id}/disable").route(web::post().to(h::disable_user)))
        .service(web::resource("/users/{user_id}/enable").route(web::post().to(h::enable_user)))
        .service(web::resource("/users/{user_id}/roles").route(web::put().to(h::set_roles)))
        .service(
            web::resource("/users/{user_id}/quota")
                .route(web::get().to(h::get_user_quota))
                .route(web::put().to(h::set_user_quota)),
        )
        .service(
            web::resource("/users/{user_id}/keys")
                .route(web::get().to(h::list_user_keys))
                .route(web::post().to(h::create_user_key)),
        )
        .service(
            web::resource("/users/{user_id}/keys/{key_id}")
                .route(web::delete().to(h::revoke_user_key)),
        )
        .service(
            web::resource("/users/{user_id}/keys/{key_id}/quota")
                .route(web::put().to(h::set_key_quota)),
        )
        .service(web::resource("/audit").route(web::get().to(audit::list_audit)));
}
