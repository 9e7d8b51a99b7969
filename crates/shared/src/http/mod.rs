//! The HTTP edge shared by every context: error mapping, request ids, extractor configuration,
//! paging DTOs and OpenAPI helpers. Contexts' `interface` layers use these; nothing else does.

mod error;
mod extract;
mod multipart;
mod normalize;
mod openapi;
mod paging;
mod request_id;

pub use error::{
    ApiError, ErrorFormat, ErrorParts, OpenAi, OpenAiError, OpenAiErrorBody, OpenAiErrorDetail,
    PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, Problem, ProblemBody, kind_of_status, openai_type_of,
    status_of,
};
pub use extract::{
    ClientIp, ValidatedJson, error_fallback, is_multipart, json_config, path_config, query_config,
    validation_fields,
};
pub use multipart::{FilePart, Form, FormError, FormRules, read_form};
pub use normalize::normalize_path;
pub use openapi::{NO_NUL, SecuritySchemes, enum_list};
pub use paging::{PageQuery, PageResponse};
pub use request_id::{REQUEST_ID_HEADER, RequestId, request_id};
