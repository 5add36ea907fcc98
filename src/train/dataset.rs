//! A validated classification data set: inputs [n, d] (f64) and one class per row.

#[cfg(feature = "study")]
use crate::data::{Images, Mnist};
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2, Axis};

/// Inputs and class labels, checked once (finite inputs, labels < `classes`, matching counts).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    x: Array2<f64>,
    labels: Vec<usize>,
    classes: usize,
}

impl Dataset {
    /// Builds a data set from inputs `x` [n, d] and `labels` (n classes in `0..classes`).
    pub fn new(x: Array2<f64>, labels: Vec<usize>, classes: usize) -> Result<Dataset> {
        if x.nrows() == 0 || x.ncols() == 0 {
            return Err(Error::Input(format!(
                "the data set is empty (inputs of shape {:?}); give at least one row and column",
                x.shape()
            )));
        }
        if labels.len() != x.nrows() {
            return Err(Error::Input(format!(
                "{} labels for {} inputs: give one label per input",
                labels.len(),
                x.nrows()
            )));
        }
        if classes < 2 {
            return Err(Error::Input(format!(
                "{classes} classes: classification needs at least 2"
            )));
        }
        if let Some((i, &c)) = labels.iter().enumerate().find(|(_, &c)| c >= classes) {
            return Err(Error::Input(format!(
                "label {i} is class {c}, outside 0..{classes}"
            )));
        }
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the training or test inputs".into(),
                index,
            });
        }
        Ok(Dataset { x, labels, classes })
    }

    /// The first `count` images of an IDX image set (pixels / 255, as PyTorch's `ToTensor`
    /// gives them in f32, widened to f64) with their labels, as a 10-class data set (MNIST);
    /// `None` takes all of them.
    #[cfg(feature = "study")]
    pub fn from_images(images: &Images, labels: &[u8], count: Option<usize>) -> Result<Dataset> {
        let available = images.count.min(labels.len());
        let n = match count {
            None => available,
            Some(0) => {
                return Err(Error::Input(
                    "a subset of 0 images: ask for at least 1".into(),
                ))
            }
            Some(k) if k > available => {
                return Err(Error::Input(format!(
                    "a subset of {k} images, but only {available} exist"
                )))
            }
            Some(k) => k,
        };
        let x = images.to_f32_normalised(0..n).mapv(f64::from);
        let labels = labels[..n].iter().map(|&c| usize::from(c)).collect();
        Dataset::new(x, labels, 10)
    }

    /// The first `subset` MNIST training images (all 60,000 for `None`).
    #[cfg(feature = "study")]
    pub fn mnist_train(mnist: &Mnist, subset: Option<usize>) -> Result<Dataset> {
        Dataset::from_images(&mnist.train_images, &mnist.train_labels, subset)
    }

    /// The 10,000 MNIST test images.
    #[cfg(feature = "study")]
    pub fn mnist_test(mnist: &Mnist) -> Result<Dataset> {
        Dataset::from_images(&mnist.test_images, &mnist.test_labels, None)
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always false: a data set has at least one example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Input width d.
    pub fn input_dim(&self) -> usize {
        self.x.ncols()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// All inputs [n, d].
    pub fn inputs(&self) -> ArrayView2<'_, f64> {
        self.x.view()
    }

    /// All labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The rows `indices` (in that order) as a new input matrix and label list.
    /// Indices must be < `len()`; out-of-range indices are an error, not a panic.
    pub fn gather(&self, indices: &[usize]) -> Result<(Array2<f64>, Vec<usize>)> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::Input(format!(
                "example {i} requested from a data set of {}",
                self.len()
            )));
        }
        let x = self.x.select(Axis(0), indices);
        let y = indices.iter().map(|&i| self.labels[i]).collect();
        Ok((x, y))
    }
}
