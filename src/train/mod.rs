//! Training of MLPs (mini-batch SGD/Adam with cross-entropy).
