//! Provisioners: the side effects that make a plan happen. They execute what they are told
//! and report what they observe; they never decide what to deploy.

pub mod cloudformation;
pub mod codepipeline;
pub mod terraform;
