//! scenesay: tells a blind or low-vision person, out loud, what the camera sees, running Apple's
//! FastVLM natively on the CPU.

pub mod cli;
pub mod commands;
pub mod describer;
pub mod exit;
pub mod jobs;
pub mod model;
pub mod model_store;
pub mod policy;
pub mod signals;
pub mod subtitles;
