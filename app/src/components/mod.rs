mod banner;
mod history;
mod member_access;
mod plan;
mod provider_access;
mod pushed;
mod write;

pub use banner::PatientBanner;
pub use history::HistoryReview;
pub use plan::PlanPanel;
