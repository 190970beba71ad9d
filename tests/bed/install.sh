#!/usr/bin/env bash
# Placeholder: replaced by the test bed installer.
exit 0
