"""Natural corruptions: the common corruptions of Hendrycks & Dietterich (2019), in torch."""
