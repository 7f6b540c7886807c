{#- fct_data_values for publication: counts from 1 to the small-cell threshold minus 1 are
    masked (value and value_text NULL, is_suppressed true). Totals of these values are
    published elsewhere (pub_indicator_values, pub_surveillance_weekly), so every parent org
    unit counts as published and complementary masking applies among the org units under
    one parent, per data element, disaggregation, period and source. Reporting and
    data-quality counts (pseudo data elements) describe reports, not people: never masked. -#}
with data_values as (

    select
        *,
        source not in ('reporting', 'data_quality') as is_sensitive
    from {{ ref('fct_data_values') }}

),

masked as (

    {{ hp_masked_cells(
        'data_values',
        ['source', 'data_element_id', 'category_option_combo_id', 'attribute_option_combo_id', 'period_id'],
        'value',
        ref('dim_org_unit'),
        sensitive='c.is_sensitive',
        assume_parents_published=true) }}

)

select
    v.data_element_id,
    v.category_option_combo_id,
    v.attribute_option_combo_id,
    v.org_unit_id,
    v.period_id,
    v.period_type,
    v.period_start_date,
    v.period_end_date,
    case when m.is_masked then null else v.value end as value,
    case when m.is_masked then null else v.value_text end as value_text,
    v.source,
    v.data_set_id,
    v.is_derived,
    coalesce(m.is_masked, false) as is_suppressed
from data_values as v
left join masked as m
    on m.org_unit_id = v.org_unit_id
    and m.source = v.source
    and m.data_element_id = v.data_element_id
    and m.category_option_combo_id = v.category_option_combo_id
    and m.attribute_option_combo_id = v.attribute_option_combo_id
    and m.period_id = v.period_id
