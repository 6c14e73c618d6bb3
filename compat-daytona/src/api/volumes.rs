//! `/api/volumes`: Platinum has no volumes. The list is empty, lookups are 404 and creating one
//! is refused (so `volume.get(name, create=True)` fails with the reason).

use axum::Json;
use serde_json::{Value, json};

use crate::error::{DPath, DaytonaError};

/// `GET /volumes`: none.
pub async fn list_volumes() -> Json<Value> {
    Json(json!([]))
}

/// `GET /volumes/{id}`, `/volumes/by-name/{name}`, `DELETE /volumes/{id}`: there are none.
pub async fn get_volume(DPath(id): DPath<String>) -> DaytonaError {
    DaytonaError::not_found(format!("volume {id} not found (Platinum has no volumes)"))
}

/// `POST /volumes`: refused.
pub async fn create_volume() -> DaytonaError {
    DaytonaError::bad_request(
        "Platinum does not offer volumes; keep data in the sandbox (its disk survives stop and start)",
    )
}
