"""The shared loop keeps the best validation epoch's weights and stops after its patience."""
import torch
from torch import nn

from adaptor_vlp.evaluate.early_stopping import TrainingSettings, seeded_torch, train_with_early_stopping


def test_weights_of_the_best_validation_epoch_are_kept_when_validation_gets_worse():
    inputs = torch.linspace(-1, 1, 64)[:, None]
    with seeded_torch(0):
        model = nn.Linear(1, 1)
        settings = TrainingSettings(learning_rate=0.05, batch_size=16, max_epochs=50, patience=3)
        outcome = train_with_early_stopping(
            model, nn.MSELoss(), (inputs, 3 * inputs), (inputs, -3 * inputs), settings, seed=0
        )
    assert outcome.best_epoch == 1
    assert outcome.epochs_run == 1 + settings.patience
    with torch.no_grad():
        kept_loss = float(nn.MSELoss()(model(inputs), -3 * inputs))
    assert abs(kept_loss - outcome.best_val_loss) < 1e-6


def test_training_runs_to_max_epochs_while_validation_keeps_improving():
    inputs = torch.linspace(-1, 1, 64)[:, None]
    with seeded_torch(0):
        model = nn.Linear(1, 1)
        settings = TrainingSettings(learning_rate=0.01, batch_size=16, max_epochs=8, patience=3)
        outcome = train_with_early_stopping(
            model, nn.MSELoss(), (inputs, 3 * inputs), (inputs, 3 * inputs), settings, seed=0
        )
    assert outcome.best_epoch == outcome.epochs_run == 8
