//! What the browser session holds: authorizations in flight and the launch ids it owns. No
//! token ever goes in here (tokens sit with the launch, server side).

use smart::PendingAuthorization;
use tower_sessions::Session;

use crate::error::ServiceError;

const PENDING: &str = "pending_authorizations";
const LAUNCHES: &str = "launches";

/// At most this many sign-ins in flight per browser (several tabs launching at once).
const MAX_PENDING: usize = 8;
/// At most this many launches remembered per browser.
const MAX_LAUNCHES: usize = 16;

pub async fn pending(
    session: &Session,
) -> Result<Vec<PendingAuthorization>, tower_sessions::session::Error> {
    Ok(session.get::<Vec<PendingAuthorization>>(PENDING).await?.unwrap_or_default())
}

pub async fn set_pending(
    session: &Session,
    mut list: Vec<PendingAuthorization>,
) -> Result<(), tower_sessions::session::Error> {
    if list.len() > MAX_PENDING {
        list.drain(..list.len() - MAX_PENDING);
    }
    session.insert(PENDING, list).await
}

pub async fn add_launch(
    session: &Session,
    launch_id: &str,
) -> Result<(), tower_sessions::session::Error> {
    let mut list = session.get::<Vec<String>>(LAUNCHES).await?.unwrap_or_default();
    list.push(launch_id.to_owned());
    if list.len() > MAX_LAUNCHES {
        list.drain(..list.len() - MAX_LAUNCHES);
    }
    session.insert(LAUNCHES, list).await
}

/// Fails unless this browser session started `launch_id`: a launch id seen elsewhere (a
/// copied URL, another user's browser) opens nothing.
pub async fn require_launch(session: &Session, launch_id: &str) -> Result<(), ServiceError> {
    let owned = session.get::<Vec<String>>(LAUNCHES).await?.unwrap_or_default();
    if owned.iter().any(|id| id == launch_id) {
        Ok(())
    } else {
        Err(ServiceError::NotInSession)
    }
}
