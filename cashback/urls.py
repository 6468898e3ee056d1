from django.urls import path

from cashback import views

urlpatterns = [
    path("purchases", views.PurchaseListCreate.as_view(), name="purchases"),
    path("purchases/<path:order_id>", views.PurchaseDetail.as_view(), name="purchase-detail"),
]
