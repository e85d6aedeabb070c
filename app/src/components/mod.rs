mod banner;
mod history;
mod plan;

pub use banner::PatientBanner;
pub use history::HistoryReview;
pub use plan::PlanPanel;
