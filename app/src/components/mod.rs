mod banner;
mod history;
mod plan;
mod write;

pub use banner::PatientBanner;
pub use history::HistoryReview;
pub use plan::PlanPanel;
