"""The floor: the least a Django service must do for a purchase POST, to measure against."""
