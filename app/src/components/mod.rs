mod banner;

pub use banner::PatientBanner;
