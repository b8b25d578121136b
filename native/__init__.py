"""Sources of devicelab's native programs (dlprobe, dlbench), shipped as package data so that
`devicelab build-native` can build them from an installed devicelab. Nothing to import here."""
