mod banner;
mod plan;

pub use banner::PatientBanner;
pub use plan::PlanPanel;
