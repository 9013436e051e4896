from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        # The operators' dashboard (tenants, a layer below) shows revenue through this seam:
        # tenants may not import billing.
        from billing.selectors import revenue_by_tenant
        from tenants.admin_dashboard import set_revenue_source

        set_revenue_source(revenue_by_tenant)
