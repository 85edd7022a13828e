"""The labs' demonstrations that are not runs of the trainer: what a lab's mistakes cost, and the baselines a
lab compares its networks with (notebook 02, the notMNIST lab)."""
import numpy as np


def validation_mistakes(dataset="notmnist", data_dir=None, *, arch="lenet5", epochs=2, limit_train=None,
                        batch_size=128, seed=0):
    """What the notMNIST lab's two mistakes cost, measured on one small model, trained three ways.

    1. correct: stratified shuffled 10% validation split, inputs standardised (train mean/std);
    2. Keras `validation_split=0.1` on the label-sorted training arrays: the last 10% of a set stored
       letter by letter holds one or two letters, which the model then never trains on;
    3. raw 0-255 pixels fed to the network (no normalisation), stratified split.
    Returns (table, val_counts): one row per setup (validation classes, val and test accuracy) and
    the per-class counts of the two validation sets.
    """
    import keras
    import pandas as pd

    from tfcnn import data, models

    ds = data.load(dataset, data_dir)
    x, y = ds.x_train, ds.y_train
    if limit_train and limit_train < len(y):
        keep = np.sort(np.random.default_rng(seed).choice(len(y), limit_train, replace=False))
        x, y = x[keep], y[keep]  # sorted indices: the stored (label) order is kept
    x_tr, y_tr, x_val, y_val = data.split_validation(x, y, 0.1, seed)
    tail = y[-int(round(0.1 * len(y))):]
    counts = pd.DataFrame({"last 10% (validation_split=0.1)": np.bincount(tail, minlength=ds.num_classes),
                           "stratified 10%": np.bincount(y_val, minlength=ds.num_classes)},
                          index=pd.Index(ds.class_names, name="class"))

    def fit(train_x, train_y, normalization, **fit_kwargs):
        keras.utils.set_random_seed(seed)
        model = models.build(arch, ds.image_shape, ds.num_classes, normalization=normalization)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        hist = model.fit(train_x.astype("float32"), train_y, epochs=epochs, batch_size=batch_size, verbose=0,
                         **fit_kwargs)
        _, test_acc = model.evaluate(ds.x_test.astype("float32"), ds.y_test, verbose=0)
        keras.utils.clear_session()
        return hist.history["val_accuracy"][-1], test_acc

    stats = [s.tolist() for s in data.normalization_stats(x_tr)]
    rows = []
    for setup, val_y, (val_acc, test_acc) in [
        ("stratified split, standardised inputs (correct)", y_val,
         fit(x_tr, y_tr, stats, validation_data=(x_val.astype("float32"), y_val))),
        ("last 10% as validation (Keras validation_split=0.1)", tail,
         fit(x, y, stats, validation_split=0.1)),
        ("stratified split, raw 0-255 pixels", y_val,
         fit(x_tr, y_tr, None, validation_data=(x_val.astype("float32"), y_val))),
    ]:
        present = [ds.class_names[c] for c in np.unique(val_y)]
        rows.append({"setup": setup, "validation classes": "".join(present) if len(present) <= 3 else
                     f"all {len(present)}", "val accuracy": val_acc, "test accuracy": test_acc})
    return pd.DataFrame(rows), counts


def linear_baseline(dataset="notmnist", data_dir=None, *, limit_train=None, seed=0, max_iter=200):
    """Test accuracy of multinomial logistic regression on standardised raw pixels (scikit-learn).

    lbfgs stops after `max_iter` iterations; `converged` says whether it got there first.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from tfcnn import data

    ds = data.load(dataset, data_dir)
    x, y = ds.x_train, ds.y_train
    if limit_train and limit_train < len(y):
        keep = np.random.default_rng(seed).choice(len(y), limit_train, replace=False)
        x, y = x[keep], y[keep]
    mean, std = data.normalization_stats(x)

    def flat(images):
        return ((images.astype("float32") - mean) / np.where(std > 0, std, 1)).reshape(len(images), -1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as `converged` instead
        clf = LogisticRegression(max_iter=max_iter).fit(flat(x), y)
    return {"train_images": int(len(y)), "test_accuracy": float(clf.score(flat(ds.x_test), ds.y_test)),
            "iterations": int(clf.n_iter_.max()), "converged": bool(clf.n_iter_.max() < max_iter)}
