//! scenesay: tells a blind or low-vision person, out loud, what the camera sees, running Apple's
//! FastVLM natively on the CPU.

pub mod capture;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod describer;
pub mod exit;
pub mod jobs;
pub mod memory;
pub mod model;
pub mod model_store;
pub mod narration;
pub mod policy;
pub mod private_files;
pub mod session;
pub mod signals;
pub mod speech;
pub mod status;
pub mod subtitles;
pub mod worker;
