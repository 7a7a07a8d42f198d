"""Confidence calibration: labels from reviewed answers, calibrators fitted from them, and the snapshot the
engine maps raw confidence signals through. The math is in orchestration/engine/calibration.py (applying,
on the hot path) and orchestration/engine/calibration_fit.py (fitting, scikit-learn, in the periodic job)."""
