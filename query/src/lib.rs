//! The query layer on DataFusion (issue 6).
