{#- LMIS stock reports: one row per source, facility, month and tracer commodity, with the
    facility's org unit and whether the item was out of stock on any day of the month. -#}
select
    s.source_name,
    o.org_unit_id,
    s.period_id,
    s.item_code,
    s.item_name,
    s.unit,
    s.opening_balance,
    s.quantity_received,
    s.quantity_consumed,
    s.losses,
    s.adjustments,
    s.stock_on_hand,
    s.stockout_days,
    coalesce(s.stockout_days > 0, false) as has_stockout
from {{ ref('stg_tabular__lmis_stock') }} as s
join {{ ref('int_org_units') }} as o on o.code = s.org_unit_code
