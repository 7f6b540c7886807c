{#- Every computable indicator at every org-unit level and every period type at or above its
    data's own, like DHIS2 analytics. value = numerator / denominator * factor, NULL when the
    denominator is missing or zero. The aggregated values are those of every data value and,
    apart, those derived from the alert records (built after the alerts). -#}
with evaluated as (

    {{ hp_indicator_values_sql(
        '(select * from ' ~ ref('int_data_values_aggregated') ~ ' union all select * from '
            ~ ref('int_alert_data_values_aggregated') ~ ') as aggregated',
        ref('stg_healthpipe__indicators'),
        ref('stg_healthpipe__indicator_operands')) }}

)

select
    e.indicator_id,
    i.domain,
    e.org_unit_id,
    e.org_unit_level,
    e.period_id,
    e.period_type,
    e.numerator,
    e.denominator,
    i.factor,
    case
        when e.denominator is null or e.denominator = 0 then null
        else e.numerator / e.denominator * i.factor
    end as value
from evaluated as e
join {{ ref('stg_healthpipe__indicators') }} as i on i.indicator_id = e.indicator_id
where e.numerator is not null or e.denominator is not null
