"""Billing: prices a tenant's month from its plan and its metered usage, and keeps the
invoices and credit notes that result (see ``services`` for the rules)."""
